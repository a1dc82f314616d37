// Harbor webhook bodies (Default and CloudEvents formats) into references to prewarm.
import { Readable } from 'node:stream';
import t from 'tap';
import { HarborWebhookError, parseHarborWebhook, readBoundedBody } from '../../src/prewarm/harbor-webhook.js';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;

function push(resources: unknown[], repository: unknown = { name: 'app', namespace: 'proj', repo_full_name: 'proj/app', repo_type: 'private', date_created: 1700000000 }) {
  return JSON.stringify({ type: 'PUSH_ARTIFACT', occur_at: 1700000001, operator: 'robot$ci', event_data: { resources, repository } });
}

t.test('PUSH_ARTIFACT (Default format) becomes tag@digest references', async (t) => {
  const event = parseHarborWebhook(push([{ digest: D1, tag: '1', resource_url: 'harbor.example.com/proj/app:1' }]));
  t.same(event, { type: 'PUSH_ARTIFACT', format: 'default', refs: [`proj/app:1@${D1}`], ignored: null, repository: 'proj/app', operator: 'robot$ci' });

  const many = parseHarborWebhook(
    Buffer.from(
      push([
        { digest: D1, tag: '1', resource_url: 'harbor.example.com/proj/app:1' },
        { digest: D1, tag: 'latest', resource_url: 'harbor.example.com/proj/app:latest' },
        { digest: D2, tag: D2, resource_url: `harbor.example.com/proj/app@${D2}` },
        { digest: D2, tag: '' },
        { digest: D1, tag: '1' },
      ]),
    ),
  );
  t.same(many.refs, [`proj/app:1@${D1}`, `proj/app:latest@${D1}`, `proj/app@${D2}`], 'digest in the tag field is no tag; duplicates dropped');

  const nested = parseHarborWebhook(push([{ digest: D1, tag: 'v2' }], { name: 'team/app', namespace: 'proj' }));
  t.same(nested.refs, [`proj/team/app:v2@${D1}`], 'namespace + name when repo_full_name is missing');
});

t.test('CloudEvents format (harbor.artifact.pushed)', async (t) => {
  const body = JSON.stringify({
    specversion: '1.0',
    id: 'a2b8c9d0',
    requestid: 'r-1',
    source: '/projects/1/webhook/policies/3',
    type: 'harbor.artifact.pushed',
    datacontenttype: 'application/json',
    time: '2024-03-06T06:08:43Z',
    data: { resources: [{ digest: D2, tag: 'edge', resource_url: 'harbor.example.com/proj/app:edge' }], repository: { name: 'app', namespace: 'proj', repo_full_name: 'proj/app', repo_type: 'public' } },
    operator: 'admin',
  });
  const event = parseHarborWebhook(body);
  t.equal(event.format, 'cloudevents');
  t.same(event.refs, [`proj/app:edge@${D2}`]);
});

t.test('other event types are ignored with a reason', async (t) => {
  for (const type of ['PULL_ARTIFACT', 'DELETE_ARTIFACT', 'SCANNING_COMPLETED', 'harbor.artifact.pulled']) {
    const event = parseHarborWebhook(JSON.stringify({ type, occur_at: 1, operator: 'x', event_data: { resources: [{ digest: D1, tag: '1' }], repository: { repo_full_name: 'proj/app' } } }));
    t.same(event.refs, [], type);
    t.equal(event.ignored, `event type ${type} is not an artifact push`);
  }
});

t.test('malformed bodies are rejected with a clear message', async (t) => {
  const cases: Array<[string | Buffer, RegExp]> = [
    ['', /body is empty/],
    ['{not json', /not JSON/],
    ['[1,2]', /not a JSON object/],
    ['{"event_data":{}}', /has no "type"/],
    ['{"type":"PUSH_ARTIFACT"}', /has no "event_data" object/],
    [push([]), /has no "event_data.resources"/],
    [push([{ digest: D1, tag: '1' }], null), /no "event_data.repository" object/],
    [push([{ digest: D1, tag: '1' }], { name: '', namespace: '' }), /no "event_data.repository.repo_full_name"/],
    [push([{ digest: D1, tag: '1' }], { repo_full_name: 'Proj/App' }), /"Proj\/App" is not a repository name/],
    [push([{ digest: 'sha256:short', tag: '1' }]), /event_data.resources\[0\].digest "sha256:short" is not a sha256 digest/],
    [push([{ digest: D1, tag: 'bad tag!' }]), /resources\[0\].tag "bad tag!" is not a valid tag/],
    [push([{ digest: D1, tag: 7 }]), /tag is not a string/],
    [push([{}]), /resources\[0\] has neither a digest nor a tag/],
    [push(['x']), /resources\[0\] is not an object/],
    [push(Array(101).fill({ digest: D1, tag: '1' })), /101 resources \(at most 100\)/],
  ];
  for (const [body, message] of cases) {
    t.throws(() => parseHarborWebhook(body), message, String(message));
    try {
      parseHarborWebhook(body);
    } catch (err) {
      t.ok(err instanceof HarborWebhookError && err.status === 400);
    }
  }
});

t.test('the body size is bounded', async (t) => {
  const big = Buffer.alloc(300 * 1024, 0x20);
  t.throws(() => parseHarborWebhook(big), /larger than 262144 bytes/);
  try {
    parseHarborWebhook(big);
  } catch (err) {
    t.equal((err as HarborWebhookError).status, 413);
  }
  t.throws(() => parseHarborWebhook(push([{ digest: D1, tag: '1' }]), 100), /larger than 100 bytes/);
  const body = await readBoundedBody(Readable.from([Buffer.from('{"a":'), Buffer.from('1}')]), 64);
  t.equal(body.toString(), '{"a":1}');
  await t.rejects(readBoundedBody(Readable.from([Buffer.alloc(40), Buffer.alloc(40)]), 64), /larger than 64 bytes/);
});
