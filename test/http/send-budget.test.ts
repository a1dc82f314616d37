// The send buffers of all responses share one budget (http/send.ts): chunks shrink as clients
// multiply, down to a floor, so memory for warm reads stays flat however many clients come.
import t from 'tap';
import { chunkBytesFor, SEND_BUDGET_BYTES, SEND_CHUNK_BYTES, SEND_CHUNK_MIN_BYTES } from '../../src/http/send.js';

t.test('one response alone gets the full chunk; many share the budget; never below the floor', async (t) => {
  t.equal(chunkBytesFor(1), SEND_CHUNK_BYTES);
  const full = SEND_BUDGET_BYTES / (2 * SEND_CHUNK_BYTES);
  t.equal(chunkBytesFor(full), SEND_CHUNK_BYTES, `${full} responses still fit at full size`);
  t.equal(chunkBytesFor(full + 1), SEND_CHUNK_BYTES / 2, 'one more halves the chunk');
  for (const n of [1, 4, 16, 64]) t.ok(2 * chunkBytesFor(n) * n <= Math.max(SEND_BUDGET_BYTES, 2 * SEND_CHUNK_MIN_BYTES * n), `${n} responses stay within the budget`);
  t.equal(chunkBytesFor(64), SEND_CHUNK_MIN_BYTES);
  t.equal(chunkBytesFor(10_000), SEND_CHUNK_MIN_BYTES, 'the floor');
});
