// The origin registry of test/integration/mdns-site.test.ts, run as its own process inside one of
// the test's network namespaces:
//   node dist/test/helpers/mdns-site-origin.js '{"host":"10.1.2.1","repo":"proj/app","tag":"1","seed":"s","layers":[1000]}'
// It builds the image with makeImage({ layers, seed }) (deterministic: the test computes the same
// digests), serves it as repo:tag with OriginRegistry on host (a free port), and writes one JSON
// line per event on stdout:
//   {"event":"listening","url":"http://10.1.2.1:<port>","manifestDigest":...}
//   {"event":"stats",...}     on SIGUSR2: what it served so far
//   {"event":"stopped",...}   on SIGUSR1: the listener is closed (connections refused), with the
//                             final stats; the process stays up until SIGTERM
//   {"event":"exit",...}      on SIGTERM, then it exits 0
// Stats: blobBytesServed, blobGets (GET of blobs), manifestGets, requests (everything).
import { makeImage } from './images.js';
import { OriginRegistry } from './origin-registry.js';

interface Options {
  host: string;
  repo: string;
  tag: string;
  seed: string;
  layers: number[];
  mediaType?: 'docker' | 'oci';
}

const line = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + '\n');
const opts = JSON.parse(process.argv[2] ?? '{}') as Options;

const image = makeImage({ layers: opts.layers, seed: opts.seed, mediaType: opts.mediaType });
const origin = await OriginRegistry.start({ host: opts.host });
origin.putImage(opts.repo, opts.tag, image);

const stats = () => ({
  blobBytesServed: origin.blobBytesServed,
  blobGets: origin.count({ method: 'GET', kind: 'blob' }),
  manifestGets: origin.count({ method: 'GET', kind: 'manifest' }),
  requests: origin.requests.length,
});

// The listener alone would keep the process up; after SIGUSR1 closes it, this does.
const keepAlive = setInterval(() => undefined, 60_000);

process.on('SIGUSR2', () => line({ event: 'stats', ...stats() }));
process.once('SIGUSR1', () => {
  void origin.stop().then(() => line({ event: 'stopped', ...stats() }));
});
process.once('SIGTERM', () => {
  clearInterval(keepAlive);
  void origin.close().then(() => {
    line({ event: 'exit', ...stats() });
    process.exit(0);
  });
});

line({ event: 'listening', url: origin.url, port: origin.port, manifestDigest: image.manifestDigest, blobs: 1 + image.layers.length });
