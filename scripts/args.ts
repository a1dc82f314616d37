// Command-line numbers for the benchmark scripts: `--name N`, a positive integer, or the fallback.

export function positiveIntArg(name: string, fallback: number, argv: readonly string[] = process.argv): number {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const n = Number(argv[i + 1]);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name} takes a positive integer, got ${JSON.stringify(argv[i + 1])}`);
  return n;
}
