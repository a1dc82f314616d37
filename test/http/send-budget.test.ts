// The send buffers of all responses share one budget (http/send.ts): the first responses get
// full-size chunks while it lasts, later ones smaller chunks down to a floor, so memory for warm
// reads stays flat however many clients come.
import t from 'tap';
import { chunkBytesFor, SEND_BUDGET_BYTES, SEND_CHUNK_BYTES, SEND_CHUNK_MIN_BYTES } from '../../src/http/send.js';

t.test('full chunks while the budget lasts, then smaller ones, never below the floor', async (t) => {
  t.equal(chunkBytesFor(0), SEND_CHUNK_BYTES, 'a response alone');
  let live = 0;
  const sizes: number[] = [];
  for (let i = 0; i < 64; i++) {
    const size = chunkBytesFor(live);
    sizes.push(size);
    live += 2 * size;
  }
  t.ok(sizes.every((s, i) => i === 0 || s <= sizes[i - 1]!), 'later responses never get more than earlier ones');
  t.equal(sizes.filter((s) => s === SEND_CHUNK_BYTES).length, SEND_BUDGET_BYTES / (2 * SEND_CHUNK_BYTES), 'full size while the budget lasts');
  t.ok(sizes.every((s) => s >= SEND_CHUNK_MIN_BYTES), 'the floor');
  t.ok(live <= SEND_BUDGET_BYTES + 64 * 2 * SEND_CHUNK_MIN_BYTES, `64 responses hold ${live} bytes: the budget plus the floor each`);
  t.equal(chunkBytesFor(SEND_BUDGET_BYTES * 10), SEND_CHUNK_MIN_BYTES);
});
