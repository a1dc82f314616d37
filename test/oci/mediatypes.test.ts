// Accept parsing and matching, and what a manifest declares and refers to.
import t from 'tap';
import {
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  OCI_INDEX,
  OCI_MANIFEST,
  acceptAdmits,
  isIndexMediaType,
  manifestReferences,
  parseAccept,
  sniffMediaType,
} from '../../src/oci/mediatypes.js';

t.test('parseAccept', async (t) => {
  t.same(parseAccept(undefined), []);
  t.same(parseAccept(`${OCI_INDEX}, ${DOCKER_MANIFEST};q=0.9, */*;q=0.8`), [OCI_INDEX, DOCKER_MANIFEST, '*/*']);
  t.same(parseAccept([DOCKER_MANIFEST, DOCKER_MANIFEST_LIST]), [DOCKER_MANIFEST, DOCKER_MANIFEST_LIST], 'several headers');
  t.same(parseAccept(`${OCI_INDEX};q=0, ${OCI_MANIFEST}`), [OCI_MANIFEST], 'q=0 is a refusal');
  t.same(parseAccept('Application/VND.OCI.Image.Index.v1+JSON'), [OCI_INDEX], 'case-insensitive');
  t.same(parseAccept(' , ,'), []);
});

t.test('acceptAdmits', async (t) => {
  const table: Array<[string[], string, boolean]> = [
    [[OCI_INDEX, OCI_MANIFEST], OCI_INDEX, true],
    [[DOCKER_MANIFEST], DOCKER_MANIFEST_LIST, false],
    [[DOCKER_MANIFEST], OCI_INDEX, false],
    [['*/*'], OCI_INDEX, true],
    [['application/*'], DOCKER_MANIFEST_LIST, true],
    [['text/*'], DOCKER_MANIFEST, false],
    [[], DOCKER_MANIFEST, true],
    [[], OCI_MANIFEST, true],
    [[], DOCKER_MANIFEST_LIST, false],
    [[], OCI_INDEX, false],
    [[OCI_MANIFEST], `${OCI_MANIFEST}; charset=utf-8`, true],
  ];
  for (const [accept, type, expected] of table) t.equal(acceptAdmits(accept, type), expected, `${JSON.stringify(accept)} admits ${type}`);
});

t.test('isIndexMediaType', async (t) => {
  t.ok(isIndexMediaType(OCI_INDEX));
  t.ok(isIndexMediaType(DOCKER_MANIFEST_LIST));
  t.notOk(isIndexMediaType(OCI_MANIFEST));
});

t.test('sniff and references', async (t) => {
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      config: { mediaType: 'x', digest: 'sha256:c', size: 1 },
      layers: [{ digest: 'sha256:l1' }, { digest: 'sha256:l2' }, { digest: 'sha256:l1' }],
      subject: { digest: 'sha256:s' },
    }),
  );
  t.equal(sniffMediaType(manifest), OCI_MANIFEST, 'shape of an OCI manifest');
  t.same(manifestReferences(manifest).sort(), ['sha256:c', 'sha256:l1', 'sha256:l2', 'sha256:s']);
  const index = Buffer.from(JSON.stringify({ mediaType: DOCKER_MANIFEST_LIST, manifests: [{ digest: 'sha256:a' }] }));
  t.equal(sniffMediaType(index), DOCKER_MANIFEST_LIST, 'declared type wins');
  t.same(manifestReferences(index), ['sha256:a']);
  t.equal(sniffMediaType(Buffer.from('not json')), null);
  t.equal(sniffMediaType(Buffer.from('[1,2]')), null);
  t.same(manifestReferences(Buffer.from('{')), []);
});
