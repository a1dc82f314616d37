// Progress output: a bar with bytes, rate and ETA on a terminal; plain lines elsewhere.
import { PassThrough } from 'node:stream';
import t from 'tap';
import { createProgress } from '../../src/cli/progress.js';

function fakeStream(tty: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  const out = new PassThrough();
  let text = '';
  out.on('data', (c: Buffer) => (text += c.toString()));
  Object.assign(out, { isTTY: tty, columns: 160, cursorTo: () => true, clearLine: () => true, moveCursor: () => true });
  return { stream: out as unknown as NodeJS.WriteStream, text: () => text };
}

t.test('on a terminal: a bar with done, total, rate and ETA', async (t) => {
  const { stream, text } = fakeStream(true);
  const p = createProgress('import app.tar', stream);
  p.total(10 * 1024 * 1024);
  p.update(5 * 1024 * 1024, 'layer 1');
  p.log('proj/app:1 done');
  p.stop();
  await new Promise((r) => setImmediate(r));
  t.match(text(), /import app\.tar \[/);
  t.match(text(), /50%/);
  t.match(text(), /5\.0 MiB of 10\.0 MiB/);
  t.match(text(), /ETA/);
  t.match(text(), /proj\/app:1 done\n/);
});

t.test('elsewhere: plain lines with bytes, rate and ETA', async (t) => {
  const { stream, text } = fakeStream(false);
  const p = createProgress('prewarm', stream);
  p.total(4096);
  p.update(1024);
  p.log('a line');
  p.stop();
  await new Promise((r) => setImmediate(r));
  t.match(text(), /^a line$/m);
  t.match(text(), /^prewarm: 1\.0 KiB of 4\.0 KiB at .*\/s( ETA .*)?$/m);
  t.notMatch(text(), /\x1b\[/, 'no terminal escapes');
});
