// Durations and sizes as written in configuration, and their formatting for logs.
import t from 'tap';
import { formatBytes, formatDuration, parseDuration, parseSize } from '../src/units.js';

t.test('parseDuration', async (t) => {
  const good: Array<[string, number]> = [
    ['500ms', 500],
    ['0ms', 0],
    ['0s', 0],
    ['2s', 2000],
    ['1.5s', 1500],
    ['.5s', 500],
    ['5m', 300_000],
    ['3h', 10_800_000],
    ['14d', 1_209_600_000],
    ['30', 30_000],
    ['0.25', 250],
    [' 10s ', 10_000],
    ['1.0005s', 1001],
  ];
  for (const [text, ms] of good) t.equal(parseDuration(text), ms, JSON.stringify(text));

  const bad = ['', '5x', '5 minutes', '-1s', 's', '1.5.2s', '10S', '1e3', 'ms', '5m30s', 'NaN', 'Infinity'];
  for (const text of bad) {
    t.throws(() => parseDuration(text), { message: /is not a duration \(use 500ms/ }, JSON.stringify(text));
  }
  t.throws(() => parseDuration('99999999999999999999d'), { message: /too long/ });
});

t.test('parseSize', async (t) => {
  const good: Array<[string, number]> = [
    ['0', 0],
    ['300', 300],
    ['300B', 300],
    ['10KiB', 10_240],
    ['512MiB', 512 * 1024 ** 2],
    ['20GiB', 20 * 1024 ** 3],
    ['1TiB', 1024 ** 4],
    ['1.5GiB', 1.5 * 1024 ** 3],
    ['1kB', 1000],
    ['1KB', 1000],
    ['1MB', 1_000_000],
    ['1GB', 1_000_000_000],
    ['2TB', 2e12],
    ['20gib', 20 * 1024 ** 3],
    ['20 GiB', 20 * 1024 ** 3],
  ];
  for (const [text, bytes] of good) t.equal(parseSize(text), bytes, JSON.stringify(text));

  const bad = ['', 'GiB', '20XB', '-1GiB', '1,5GiB', 'lots', '1e9'];
  for (const text of bad) t.throws(() => parseSize(text), { message: /is not a size/ }, JSON.stringify(text));
});

t.test('formatBytes', async (t) => {
  const cases: Array<[number, string]> = [
    [0, '0 B'],
    [512, '512 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [12.3 * 1024 ** 2, '12.3 MiB'],
    [1024 ** 2 - 1, '1.0 MiB'],
    [20 * 1024 ** 3, '20.0 GiB'],
    [3 * 1024 ** 4, '3.0 TiB'],
    [-2048, '-2.0 KiB'],
  ];
  for (const [n, text] of cases) t.equal(formatBytes(n), text, String(n));
});

t.test('formatDuration', async (t) => {
  const cases: Array<[number, string]> = [
    [0, '0 ms'],
    [850, '850 ms'],
    [12.4, '12 ms'],
    [999.7, '1 s'],
    [1250, '1.25 s'],
    [2000, '2 s'],
    [59_999, '1 min'],
    [90_000, '1.5 min'],
    [3 * 3_600_000, '3 h'],
    [14 * 86_400_000, '14 d'],
  ];
  for (const [ms, text] of cases) t.equal(formatDuration(ms), text, String(ms));
});

t.test('a parsed duration formats back to the same amount', async (t) => {
  for (const text of ['850ms', '1.25s', '5m', '3h', '14d']) {
    t.equal(parseDuration(formatDuration(parseDuration(text)).replace(' min', 'm').replace(/ /g, '')), parseDuration(text), text);
  }
});
