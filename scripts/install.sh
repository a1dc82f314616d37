#!/usr/bin/env bash
# Installs Cove as a systemd service on a Debian or Ubuntu host (x86-64 or ARM64), from a built
# checkout of this repository (npm ci && npm run build). Run `scripts/install.sh --help`.
#
# What goes where (all under $DESTDIR when it is set):
#   /opt/cove/                      package.json, package-lock.json, dist/src, config, systemd, and
#                                   the production node_modules (npm ci --omit=dev)
#   /etc/cove/cove.env              settings, from systemd/cove.env.example; never overwritten
#   /etc/systemd/system/cove.service
# With DESTDIR set nothing outside it is touched: no systemctl, no root needed. Running the script
# again changes only what differs and says "nothing to do" when nothing does.
set -euo pipefail
# The service's dynamic user must be able to read /opt/cove, whatever umask root has.
umask 022

readonly PREFIX=/opt/cove
readonly UNIT=cove.service
readonly MARKER=.cove-install   # in $PREFIX: proof this script owns the directory, and a deps stamp
readonly PLACEHOLDER_UPSTREAM='COVE_UPSTREAM=https://harbor.example.com'
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly SRC

usage() {
  cat <<'EOF'
Usage: scripts/install.sh [options]

Installs Cove from this (built) checkout as the systemd service "cove".

  --upstream URL   write COVE_UPSTREAM=URL into a newly created /etc/cove/cove.env
                   (an existing cove.env is never changed)
  --offline        npm ci --offline: take the dependencies from the npm cache only
  --skip-npm       do not run npm at all (same as COVE_NPM_CI=0); /opt/cove/node_modules must
                   already hold the production dependencies (e.g. copied there beforehand)
  --no-start       install and enable, but do not start or restart the service
  --uninstall      stop and disable the service, remove /opt/cove and the unit file; keeps
                   /etc/cove (settings, secrets) and the cache in /var/lib/cove
  --purge          with --uninstall: also remove /etc/cove/cove.env, unit drop-ins
                   (/etc/systemd/system/cove.service.d) and the cache (/var/lib/cove)
  -h, --help       this text

Environment:
  DESTDIR=DIR      install into DIR (a scratch root) instead of /: nothing outside DIR is
                   touched, systemctl is not run and root is not needed
  COVE_NPM_CI=0    as --skip-npm
  COVE_NODE=PATH   the node binary the service runs (default: node on PATH); must be >= 20.18

Without DESTDIR, run as root. systemctl daemon-reload / enable / start run only when systemd is
PID 1. A fresh install whose cove.env still names the placeholder origin (harbor.example.com) is
enabled but not started: edit /etc/cove/cove.env, then run: systemctl start cove
EOF
}

say() { printf 'cove-install: %s\n' "$*"; }
warn() { printf 'cove-install: warning: %s\n' "$*" >&2; }
die() { printf 'cove-install: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Arguments

mode=install
purge=0
offline=0
start=1
upstream=
npm_ci=${COVE_NPM_CI:-1}
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --uninstall) mode=uninstall ;;
    --purge) purge=1 ;;
    --offline) offline=1 ;;
    --skip-npm) npm_ci=0 ;;
    --no-start) start=0 ;;
    --upstream)
      [ $# -ge 2 ] || die "--upstream needs a URL"
      upstream=$2
      shift
      ;;
    --upstream=*) upstream=${1#--upstream=} ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done
if [ "$purge" = 1 ] && [ "$mode" != uninstall ]; then die "--purge goes with --uninstall"; fi
case $npm_ci in 0 | 1) ;; *) die "COVE_NPM_CI must be 0 or 1, not '$npm_ci'" ;; esac
# A URL in the strict form COVE_UPSTREAM takes: scheme, host (name, IPv4 or [IPv6]), optional
# port and path. Anything else is refused before it can reach a file: no quotes, no separators.
readonly URL_PATTERN='^https?://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$'
if [ -n "$upstream" ] && ! [[ $upstream =~ $URL_PATTERN ]]; then
  die "--upstream must be an http:// or https:// URL (host[:port][/path], no query, quotes or spaces), not '$upstream'"
fi

# Copies FILE to OUT with every line equal to OLD replaced by NEW. A plain string comparison:
# nothing given on the command line or in the environment ever becomes part of a sed program.
replace_line() { # FILE OLD NEW OUT
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    if [ "$line" = "$2" ]; then printf '%s\n' "$3"; else printf '%s\n' "$line"; fi
  done <"$1" >"$4"
}

# DESTDIR: empty (or /) means the real system.
destdir=${DESTDIR:-}
while [ "${destdir%/}" != "$destdir" ]; do destdir=${destdir%/}; done
if [ -n "$destdir" ]; then
  case $destdir in /*) ;; *) destdir=$(pwd)/$destdir ;; esac
fi
readonly destdir
readonly dest=$destdir$PREFIX
readonly unit_path=$destdir/etc/systemd/system/$UNIT
readonly etc_dir=$destdir/etc/cove
readonly env_path=$etc_dir/cove.env

# True when this run may drive the real system's systemd.
systemd_live() {
  [ -z "$destdir" ] && [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]
}

if [ -z "$destdir" ] && [ "$(id -u)" != 0 ]; then
  die "installing into / needs root (sudo $0 ...), or set DESTDIR=DIR to install into a scratch root"
fi

changes=0
changed() { changes=$((changes + 1)); say "$*"; }

# ---------------------------------------------------------------------------------------------
# Uninstall

if [ "$mode" = uninstall ]; then
  if systemd_live && { [ -e "$unit_path" ] || systemctl cat "$UNIT" >/dev/null 2>&1; }; then
    if systemctl is-active --quiet "$UNIT" || systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
      systemctl disable --now "$UNIT"
      changed "stopped and disabled $UNIT"
    fi
  fi
  if [ -e "$unit_path" ]; then
    rm -f "$unit_path"
    changed "removed $unit_path"
  fi
  if [ -e "$dest" ]; then
    [ -e "$dest/$MARKER" ] || die "$dest was not installed by this script (no $MARKER in it); remove it by hand"
    rm -rf "$dest"
    changed "removed $dest"
  fi
  if [ "$purge" = 1 ]; then
    if [ -e "$env_path" ]; then rm -f "$env_path"; changed "removed $env_path"; fi
    if [ -d "$unit_path.d" ]; then rm -rf "$unit_path.d"; changed "removed $unit_path.d"; fi
    for d in "$destdir/var/lib/cove" "$destdir/var/lib/private/cove"; do
      if [ -e "$d" ] || [ -L "$d" ]; then rm -rf "$d"; changed "removed $d (the cache)"; fi
    done
    if [ -d "$etc_dir" ]; then
      if rmdir "$etc_dir" 2>/dev/null; then
        changed "removed $etc_dir"
      else
        say "kept $etc_dir: it holds files this script did not install ($(cd "$etc_dir" && find . -mindepth 1 -maxdepth 1 -printf '%P '))"
      fi
    fi
  else
    [ -e "$env_path" ] && say "kept $env_path (settings; --uninstall --purge removes it)"
    [ -d "$unit_path.d" ] && say "kept $unit_path.d (drop-ins; --purge removes them)"
    if [ -e "$destdir/var/lib/private/cove" ] || [ -e "$destdir/var/lib/cove" ]; then
      say "kept the cache in $destdir/var/lib/cove (--purge removes it)"
    fi
  fi
  if systemd_live && [ "$changes" -gt 0 ]; then
    systemctl daemon-reload
    systemctl reset-failed "$UNIT" >/dev/null 2>&1 || true
  fi
  if [ "$changes" = 0 ]; then say "nothing to do: Cove is not installed${destdir:+ in $destdir}"; else say "uninstalled"; fi
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Checks

arch=$(uname -m)
case $arch in
  x86_64 | aarch64) ;;
  amd64) arch=x86_64 ;;
  arm64) arch=aarch64 ;;
  *) die "unsupported machine '$arch': Cove installs on x86_64 and aarch64 (its LevelDB binding ships prebuilt for those)" ;;
esac

if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  os_ids=$(. /etc/os-release && printf '%s %s' "${ID:-}" "${ID_LIKE:-}")
  case " $os_ids " in
    *' debian '* | *' ubuntu '*) ;;
    *) warn "this host is not Debian or Ubuntu (/etc/os-release: $os_ids); going on anyway" ;;
  esac
fi

node=${COVE_NODE:-$(command -v node || true)}
[ -n "$node" ] || die "node is not installed: Cove needs Node.js >= 20.18 (e.g. from NodeSource), or set COVE_NODE=/path/to/node"
case $node in /*) ;; *) die "COVE_NODE must be an absolute path, not '$node'" ;; esac
# It goes into the unit's ExecStart line: a plain path only, nothing the unit file would parse.
[[ $node =~ ^/[A-Za-z0-9._/+-]+$ ]] || die "COVE_NODE must be a plain path (letters, digits, . _ / + -), not '$node'"
[ -x "$node" ] || die "$node is not an executable"
node_version=$("$node" -p 'process.versions.node' 2>/dev/null) || die "$node does not run"
[[ $node_version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "$node does not look like Node.js (it printed '$node_version' for its version)"
IFS=. read -r node_major node_minor _ <<<"$node_version"
if [ "$node_major" -lt 20 ] || { [ "$node_major" = 20 ] && [ "$node_minor" -lt 18 ]; }; then
  die "$node is Node.js $node_version; Cove needs >= 20.18 (Debian's and Ubuntu's own nodejs packages are older: use NodeSource's, or set COVE_NODE)"
fi
# The unit runs with ProtectHome=yes: a node under a home directory (nvm) is invisible to it.
node_real=$(readlink -f "$node")
case $node_real in
  /home/* | /root/* | /run/user/*)
    if [ -z "$destdir" ]; then die "$node is under a home directory ($node_real), which the service cannot see (ProtectHome=yes); install Node.js system-wide or set COVE_NODE"; fi
    warn "$node is under a home directory, which the installed service could not see (ProtectHome=yes)"
    ;;
esac

[ -f "$SRC/dist/src/cli.js" ] || die "$SRC is not built (no dist/src/cli.js): run npm ci && npm run build first"
for f in package.json package-lock.json systemd/cove.service systemd/cove.env.example; do
  [ -f "$SRC/$f" ] || die "$SRC/$f is missing"
done
if [ "$npm_ci" = 1 ]; then command -v npm >/dev/null || die "npm is not installed (it comes with Node.js); or use --skip-npm"; fi

# An existing /opt/cove must be ours; holding only node_modules (put there for --skip-npm) is fine.
if [ -d "$dest" ] && [ ! -e "$dest/$MARKER" ] && [ -n "$(find "$dest" -mindepth 1 -maxdepth 1 ! -name node_modules -print -quit)" ]; then
  die "$dest exists and was not installed by this script (no $MARKER in it); move it away first"
fi

# ---------------------------------------------------------------------------------------------
# Files

mode_of() { stat -c %a "$1"; }

# install_file SRC DST MODE: copies when the content or mode differs.
install_file() {
  local src=$1 dst=$2 mode=$3
  if [ -f "$dst" ] && [ ! -L "$dst" ] && cmp -s "$src" "$dst" && [ "$(mode_of "$dst")" = "${mode#0}" ]; then return 0; fi
  mkdir -p "$(dirname "$dst")"
  install -m "$mode" "$src" "$dst"
  updated_files=$((updated_files + 1))
}

# sync_tree SRCDIR DSTDIR: DSTDIR ends up holding exactly SRCDIR's files (mode 0644).
sync_tree() {
  local src=$1 dst=$2 rel
  while IFS= read -r -d '' rel; do
    install_file "$src/$rel" "$dst/$rel" 0644
  done < <(cd "$src" && find . -type f -printf '%P\0')
  if [ -d "$dst" ]; then
    while IFS= read -r -d '' rel; do
      if [ ! -f "$src/$rel" ]; then
        rm -f "$dst/$rel"
        updated_files=$((updated_files + 1))
      fi
    done < <(cd "$dst" && find . \( -type f -o -type l \) -printf '%P\0')
    find "$dst" -mindepth 1 -type d -empty -delete
  fi
}

# write_marker DEPS: the marker claims $dest for this script (so --uninstall may remove it) and
# records which dependencies are installed.
write_marker() {
  printf 'Installed by scripts/install.sh; scripts/install.sh --uninstall removes this directory.\ndeps: %s\n' "$1" >"$marker_tmp"
  install_file "$marker_tmp" "$dest/$MARKER" 0644
}
marker_tmp=$(mktemp)
env_tmp=$(mktemp)
unit_tmp=$(mktemp)
trap 'rm -f "$marker_tmp" "$env_tmp" "$unit_tmp"' EXIT

updated_files=0
mkdir -p "$dest"
chmod 0755 "$dest"
[ -e "$dest/$MARKER" ] || write_marker none
updated_files=0
install_file "$SRC/package.json" "$dest/package.json" 0644
install_file "$SRC/package-lock.json" "$dest/package-lock.json" 0644
sync_tree "$SRC/dist/src" "$dest/dist/src"
sync_tree "$SRC/config" "$dest/config"
sync_tree "$SRC/systemd" "$dest/systemd"
code_changed=$updated_files
if [ "$updated_files" -gt 0 ]; then changed "updated $updated_files file(s) in $dest"; fi

# Dependencies: npm ci again only when the lock file, Node's ABI or the machine changed.
deps_stamp="lock=$(sha256sum "$SRC/package-lock.json" | cut -d' ' -f1) node-abi=$("$node" -p 'process.versions.modules') arch=$arch"
old_stamp=$(sed -n 's/^deps: //p' "$dest/$MARKER" 2>/dev/null || true)
if [ "$npm_ci" = 0 ]; then
  [ -d "$dest/node_modules" ] || die "COVE_NPM_CI=0 / --skip-npm, but $dest/node_modules is missing: copy the production dependencies there first, or let npm install them"
  if [ "$old_stamp" != "$deps_stamp" ]; then say "npm skipped: using the node_modules already in $dest"; fi
elif [ "$old_stamp" != "$deps_stamp" ] || [ ! -d "$dest/node_modules" ]; then
  npm_args=(ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
  [ "$offline" = 1 ] && npm_args+=(--offline)
  say "installing dependencies: npm ${npm_args[*]} (in $dest)"
  hint=
  [ "$offline" = 1 ] && hint=" (--offline: are the packages in the npm cache? run npm ci once in the checkout)"
  (cd "$dest" && npm "${npm_args[@]}") || die "npm ci failed in $dest$hint"
  changed "installed the production dependencies"
  code_changed=$((code_changed + 1))
fi
if [ "$npm_ci" = 1 ]; then write_marker "$deps_stamp"; fi

# A quick start-up check: loads every module Cove uses (LevelDB's native binding included).
"$node" "$dest/dist/src/cli.js" --version >/dev/null || die "$dest/dist/src/cli.js does not run with $node"

# Settings: created once from the example, never overwritten.
if [ -e "$env_path" ]; then
  if [ -n "$upstream" ]; then say "kept the existing $env_path: --upstream is not applied to it"; fi
else
  mkdir -p "$etc_dir"
  chmod 0755 "$etc_dir"
  if [ -n "$upstream" ]; then
    replace_line "$SRC/systemd/cove.env.example" "$PLACEHOLDER_UPSTREAM" "COVE_UPSTREAM=$upstream" "$env_tmp"
  else
    cp "$SRC/systemd/cove.env.example" "$env_tmp"
  fi
  install -m 0600 "$env_tmp" "$env_path"
  changed "created $env_path from systemd/cove.env.example"
fi

# The unit, pointed at the node checked above.
replace_line "$SRC/systemd/cove.service" "ExecStart=/usr/bin/node $PREFIX/dist/src/cli.js serve" "ExecStart=$node $PREFIX/dist/src/cli.js serve" "$unit_tmp"
grep -qxF "ExecStart=$node $PREFIX/dist/src/cli.js serve" "$unit_tmp" || die "systemd/cove.service has no 'ExecStart=/usr/bin/node $PREFIX/dist/src/cli.js serve' line to adapt"
updated_files=0
install_file "$unit_tmp" "$unit_path" 0644
unit_changed=$updated_files
if [ "$unit_changed" -gt 0 ]; then changed "installed $unit_path"; fi

# ---------------------------------------------------------------------------------------------
# systemd

placeholder=0
if grep -qx "$PLACEHOLDER_UPSTREAM" "$env_path"; then placeholder=1; fi

if [ -n "$destdir" ]; then
  say "DESTDIR is set: systemd left alone (on the target: systemctl daemon-reload && systemctl enable --now cove)"
elif ! systemd_live; then
  say "systemd is not running as PID 1 here: the unit is installed but not enabled or started"
else
  if [ "$unit_changed" -gt 0 ]; then systemctl daemon-reload; fi
  if ! systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
    systemctl enable --quiet "$UNIT"
    changed "enabled $UNIT (starts at boot)"
  fi
  if [ "$start" = 0 ]; then
    say "--no-start: $UNIT not started or restarted"
  elif [ "$placeholder" = 1 ]; then
    say "$env_path still names the placeholder origin: set COVE_UPSTREAM there, then run: systemctl start cove"
  elif ! systemctl is-active --quiet "$UNIT"; then
    systemctl start "$UNIT"
    changed "started $UNIT (journalctl -u cove shows its log)"
  elif [ "$code_changed" -gt 0 ] || [ "$unit_changed" -gt 0 ]; then
    systemctl restart "$UNIT"
    changed "restarted $UNIT on the new version"
  fi
fi

if [ "$changes" = 0 ]; then
  say "nothing to do: Cove is already installed and up to date${destdir:+ in $destdir}"
else
  say "done ($changes change(s))"
  if [ "$placeholder" = 1 ]; then say "next: edit $env_path (COVE_UPSTREAM, and /etc/cove/origin-password for a robot account)"; fi
fi
