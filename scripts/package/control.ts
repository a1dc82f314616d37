// The Debian side of a Cove package: DEBIAN/ (control, conffiles, md5sums, maintainer scripts),
// and the documentation Debian policy asks of every package (copyright, changelog, manual page).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';
import { type DebArch, NODE_VERSION } from './runtime.js';
import { ENV_PATH, put } from './tree.js';

export const MAINTAINER = 'Cove developers <cove-dev@lists.cove.dev>';
const HOMEPAGE = 'https://github.com/cove/cove';

/**
 * The shared libraries the bundled node and LevelDB binding link against, as dpkg-shlibdeps
 * computes them for the amd64 build (node 22 needs glibc 2.28's symbols; Debian's shlibs map the
 * merged libpthread/libdl of glibc 2.34 to that floor). The arm64 build links the same libraries.
 */
const DEPENDS = 'libc6 (>= 2.34), libgcc-s1 (>= 3.4), libstdc++6 (>= 5.2)';

export interface PackageInfo {
  version: string;
  arch: DebArch;
  /** Seconds since the epoch of the commit built: the changelog's date and every file's mtime. */
  epoch: number;
}

/** Every regular file under `root`, as paths relative to it, sorted. */
function filesUnder(root: string, dir = root): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? filesUnder(root, join(dir, e.name)) : e.isFile() ? [relative(root, join(dir, e.name))] : []))
    .sort();
}


/** A licence text with each full copy of the Apache License 2.0 given by reference, as Debian ships that text. */
function licenceText(text: string): string {
  return text
    .replace(/Apache License\s+Version 2\.0, January 2004[\s\S]*?END OF TERMS AND CONDITIONS/g, 'Apache License, Version 2.0: the full text is in /usr/share/common-licenses/Apache-2.0.')
    .trim();
}

/** /usr/share/doc/cove/copyright: Cove's licence, then those of what the package bundles. */
export function writeCopyright(root: string, nodeLicence: string, licences: Array<{ file: string; text: string }>): void {
  const parts = [
    'Cove, an edge-node cache daemon for container images.',
    `Source: ${HOMEPAGE}`,
    '',
    'Copyright: the Cove developers',
    'License: Apache-2.0',
    ' On Debian systems the full text of the Apache License 2.0 is in',
    ' /usr/share/common-licenses/Apache-2.0.',
    '',
    `This package bundles the Node.js ${NODE_VERSION} runtime (/usr/lib/cove/node), under these terms:`,
    '',
    licenceText(nodeLicence),
    '',
    'It bundles these npm packages (/usr/lib/cove/node_modules), under these terms:',
    ...licences.flatMap((l) => ['', `== ${l.file} ==`, '', licenceText(l.text)]),
    '',
  ];
  put(root, '/usr/share/doc/cove/copyright', parts.join('\n'));
}

/** /usr/share/doc/cove/changelog.gz: a native package's changelog, one entry for the version built. */
export function writeChangelog(root: string, info: PackageInfo): void {
  const date = new Date(info.epoch * 1000).toUTCString().replace('GMT', '+0000');
  const text = `cove (${info.version}) unstable; urgency=medium\n\n  * Built from the Cove source tree by npm run package.\n\n -- ${MAINTAINER}  ${date}\n`;
  put(root, '/usr/share/doc/cove/changelog.gz', gzipSync(text, { level: 9 }));
}

/** /usr/share/man/man1/cove.1.gz, from `cove --help` of the code being packaged. */
export function writeManPage(root: string, repo: string, info: PackageInfo): void {
  const help = spawnSync(process.execPath, [join(repo, 'dist', 'src', 'cli.js'), '--help'], { encoding: 'utf8' });
  if (help.status !== 0) throw new Error(`cove --help failed: ${help.stderr}`);
  // Each line as literal text: backslashes doubled, a leading dot or quote made harmless.
  const body = help.stdout
    .trimEnd()
    .split('\n')
    .map((line) => line.replace(/\\/g, '\\e').replace(/^([.'])/, '\\&$1'))
    .join('\n');
  const date = new Date(info.epoch * 1000).toISOString().slice(0, 10);
  const page = `.TH COVE 1 "${date}" "cove ${info.version}" "User Commands"
.SH NAME
cove \\- edge cache for container images (an OCI pull-through mirror in front of Harbor)
.SH SYNOPSIS
.B cove
.I command
.RI [ options ]
.SH DESCRIPTION
The service runs as
.B cove serve
under systemd (cove.service), with its settings in
.IR ${ENV_PATH} .
.PP
.nf
${body}
.fi
.SH FILES
.TP
.I ${ENV_PATH}
settings of the service (COVE_* variables)
.TP
.I /var/lib/cove
the cache
.TP
.I /run/cove/admin.sock
the admin socket the commands use
`;
  put(root, '/usr/share/man/man1/cove.1.gz', gzipSync(page, { level: 9 }));
}

/** DEBIAN/: control, conffiles, md5sums and the maintainer scripts. */
export function writeDebian(root: string, repo: string, info: PackageInfo): void {
  // One pass over the tree: each file's md5 and its size, in KiB rounded up, as dpkg counts it.
  let installedKiB = 0;
  const md5sums = filesUnder(root)
    .map((f) => {
      const bytes = readFileSync(join(root, f));
      installedKiB += Math.ceil(bytes.length / 1024);
      return `${createHash('md5').update(bytes).digest('hex')}  ${f}`;
    })
    .join('\n');
  const control = [
    'Package: cove',
    `Version: ${info.version}`,
    `Architecture: ${info.arch}`,
    `Maintainer: ${MAINTAINER}`,
    `Installed-Size: ${installedKiB}`,
    `Depends: ${DEPENDS}`,
    'Recommends: openssl',
    'Section: net',
    'Priority: optional',
    `Homepage: ${HOMEPAGE}`,
    'Description: edge cache for container images (OCI pull-through mirror)',
    ' Cove runs on an edge host in front of a central Harbor (or any OCI registry)',
    ' and serves docker, containerd and podman pulls from a local cache: each blob',
    ' is fetched from the origin once and checked against its digest, and the',
    ' cache keeps serving when the link to the origin is down. Sibling nodes on a',
    ' LAN share one copy per site, and nodes can chain to a regional parent.',
    ' .',
    ` This package bundles its own Node.js ${NODE_VERSION} runtime in /usr/lib/cove:`,
    ' the host needs no Node.js. The service is not enabled on install: set',
    ' COVE_UPSTREAM in /etc/cove/cove.env, then run systemctl enable --now cove.',
    '',
  ].join('\n');
  put(root, '/DEBIAN/control', control);
  put(root, '/DEBIAN/conffiles', `${ENV_PATH}\n`);
  put(root, '/DEBIAN/md5sums', `${md5sums}\n`);
  for (const script of ['postinst', 'prerm', 'postrm']) {
    copyFileSync(join(repo, 'scripts', 'package', 'debian', script), join(root, 'DEBIAN', script));
    chmodSync(join(root, 'DEBIAN', script), 0o755);
  }
}
