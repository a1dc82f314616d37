// Platform filters (COVE_PLATFORMS) and reference parsing.
import t from 'tap';
import { ConfigError } from '../../src/errors.js';
import { formatPlatform, matches, parsePlatform, parsePlatforms } from '../../src/prewarm/platforms.js';
import { ImageRefError, parseRef } from '../../src/oci/image-ref.js';

t.test('parsePlatforms reads a list, ignores blanks and duplicates', async (t) => {
  t.same(parsePlatforms('linux/arm64,linux/amd64,linux/arm/v7'), [
    { os: 'linux', architecture: 'arm64' },
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm', variant: 'v7' },
  ]);
  t.same(parsePlatforms(''), [], 'empty: every platform');
  t.same(parsePlatforms(' , '), []);
  t.same(parsePlatforms(' Linux/AMD64 , linux/amd64,linux/arm64/v8,linux/arm64'), [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64', variant: 'v8' },
  ]);
});

t.test('bad values are refused with a message naming them', async (t) => {
  t.throws(() => parsePlatforms('linux'), new ConfigError('COVE_PLATFORMS: "linux" is not OS/ARCH or OS/ARCH/VARIANT (e.g. linux/arm64 or linux/arm/v7)'));
  t.throws(() => parsePlatforms('linux/arm64,linux/arm/v7/x'), /COVE_PLATFORMS: "linux\/arm\/v7\/x" is not OS\/ARCH/);
  t.throws(() => parsePlatforms('linux/$arch'), /COVE_PLATFORMS: "linux\/\$arch" has an invalid component "\$arch"/);
  t.throws(() => parsePlatforms('linux//v7'), /invalid component ""/);
  t.throws(() => parsePlatform('windows', '--platform'), /^--platform: /);
  t.throws(() => parsePlatforms('x'.repeat(2000)), /longer than 1024/);
  t.throws(() => parsePlatforms('a'), ConfigError, 'a ConfigError, as every bad setting');
});

t.test('matches: empty filter takes all; variants and architecture aliases', async (t) => {
  const arm64 = { os: 'linux', architecture: 'arm64' };
  const arm64v8 = { os: 'linux', architecture: 'arm64', variant: 'v8' };
  const armv7 = { os: 'linux', architecture: 'arm', variant: 'v7' };
  const armv6 = { os: 'linux', architecture: 'arm', variant: 'v6' };
  const amd64 = { os: 'linux', architecture: 'amd64' };
  t.ok(matches(amd64, []));
  t.ok(matches(arm64, parsePlatforms('linux/arm64')));
  t.ok(matches(arm64v8, parsePlatforms('linux/arm64')));
  t.ok(matches(arm64, parsePlatforms('linux/arm64/v8')), 'arm64 is v8 unless it says otherwise');
  t.notOk(matches(amd64, parsePlatforms('linux/arm64')));
  t.notOk(matches({ os: 'windows', architecture: 'amd64' }, parsePlatforms('linux/amd64')));
  t.ok(matches(armv7, parsePlatforms('linux/arm/v7')));
  t.notOk(matches(armv6, parsePlatforms('linux/arm/v7')));
  t.ok(matches(armv6, parsePlatforms('linux/arm')), 'no variant in the filter: every variant');
  t.ok(matches({ os: 'linux', architecture: 'arm' }, parsePlatforms('linux/arm/v7')), 'arm without variant is v7');
  t.ok(matches({ os: 'linux', architecture: 'x86_64' }, parsePlatforms('linux/amd64')));
  t.ok(matches({ os: 'linux', architecture: 'aarch64' }, parsePlatforms('linux/arm64')));
  t.equal(formatPlatform(armv7), 'linux/arm/v7');
  t.equal(formatPlatform(null), 'unknown');
});

t.test('parseRef', async (t) => {
  const d = `sha256:${'a'.repeat(64)}`;
  t.same(parseRef('proj/app:1'), { host: null, name: 'proj/app', tag: '1', digest: null });
  t.same(parseRef('proj/app'), { host: null, name: 'proj/app', tag: 'latest', digest: null });
  t.same(parseRef(`proj/app@${d}`), { host: null, name: 'proj/app', tag: null, digest: d });
  t.same(parseRef(`proj/app:1@${d}`), { host: null, name: 'proj/app', tag: '1', digest: d });
  t.same(parseRef('harbor.example.com/proj/app:1'), { host: 'harbor.example.com', name: 'proj/app', tag: '1', digest: null });
  t.same(parseRef('localhost:5000/app:v2'), { host: 'localhost:5000', name: 'app', tag: 'v2', digest: null });
  t.same(parseRef('localhost/app'), { host: 'localhost', name: 'app', tag: 'latest', digest: null });
  t.same(parseRef('library/nginx:1.27'), { host: null, name: 'library/nginx', tag: '1.27', digest: null });
  t.throws(() => parseRef(''), ImageRefError);
  t.throws(() => parseRef('proj/app@sha256:abc'), /invalid reference "proj\/app@sha256:abc": "sha256:abc" is not a sha256 or sha512 digest/);
  t.throws(() => parseRef('Proj/App:1'), /"Proj\/App" is not a repository name/);
  t.throws(() => parseRef('proj/app:bad tag'), /"bad tag" is not a valid tag/);
  t.throws(() => parseRef('x'.repeat(600)), /longer than 512/);
});
