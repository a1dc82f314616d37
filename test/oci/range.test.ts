// Byte ranges for blob GETs: what is served, what is a 416, what is ignored.
import t from 'tap';
import { contentRange, parseRange, unsatisfiedRange } from '../../src/oci/range.js';

t.test('range table', async (t) => {
  const size = 1000;
  const table: Array<[string | undefined, ReturnType<typeof parseRange>]> = [
    [undefined, null],
    ['bytes=0-', { start: 0, end: 999 }],
    ['bytes=10-19', { start: 10, end: 19 }],
    ['bytes=990-5000', { start: 990, end: 999 }],
    ['bytes=-5', { start: 995, end: 999 }],
    ['bytes=-5000', { start: 0, end: 999 }],
    ['bytes=999-999', { start: 999, end: 999 }],
    ['bytes=1000-', 'unsatisfiable'],
    ['bytes=5000-6000', 'unsatisfiable'],
    ['bytes=-0', 'unsatisfiable'],
    ['bytes=20-10', null], // invalid: ignored, whole body
    ['bytes=0-1,5-6', null], // several ranges: whole body
    ['items=0-1', null],
    ['bytes=-', null],
    ['bytes=abc', null],
    [' bytes = 5 - 9 ', { start: 5, end: 9 }],
  ];
  for (const [header, expected] of table) t.same(parseRange(header, size), expected, String(header));
  t.equal(parseRange('bytes=0-', 0), 'unsatisfiable', 'an empty blob has no satisfiable range');
});

t.test('headers', async (t) => {
  t.equal(contentRange(10, 19, 1000), 'bytes 10-19/1000');
  t.equal(unsatisfiedRange(1000), 'bytes */1000');
});
