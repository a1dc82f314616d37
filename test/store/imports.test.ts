// store/ stays free of import cycles and only imports downwards: from its own files, from the
// pure oci/ helpers and from the leaf modules (errors, log, metrics, units). records.ts, which
// holds the record shapes every other store file shares, imports nothing from store/. Read from
// the TypeScript sources, type-only imports included: a cycle through types is still a knot.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

// dist/test/store/imports.test.js -> the repository root.
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SRC = join(ROOT, 'src');

/** What store/ may import from outside itself (paths relative to src/). */
const BELOW_STORE = [/^oci\//, /^errors\.ts$/, /^log\.ts$/, /^metrics\.ts$/, /^units\.ts$/];

/** Relative imports of one source file, as paths relative to src/ (`.js` read as `.ts`). */
function importsOf(file: string): string[] {
  const text = readFileSync(join(SRC, file), 'utf8');
  const out = new Set<string>();
  const patterns = [/^\s*(?:import|export)\b[^'"]*?\bfrom\s*['"](\.{1,2}\/[^'"]+)['"]/gm, /^\s*import\s*['"](\.{1,2}\/[^'"]+)['"]/gm, /\bimport\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g];
  for (const re of patterns) {
    for (const m of text.matchAll(re)) out.add(normalize(join(dirname(file), m[1]!.replace(/\.js$/, '.ts'))));
  }
  return [...out];
}

/** The import graph reachable from `roots`. */
function graphFrom(roots: string[]): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const queue = [...roots];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (graph.has(file)) continue;
    const deps = importsOf(file);
    graph.set(file, deps);
    queue.push(...deps);
  }
  return graph;
}

/** Every cycle (as a path that returns to its start) in a graph; empty when there is none. */
function findCycles(graph: Map<string, string[]>): string[][] {
  const cycles: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (node: string) => {
    state.set(node, 'open');
    path.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 'open') cycles.push([...path.slice(path.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    path.pop();
    state.set(node, 'done');
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return cycles;
}

const storeFiles = readdirSync(join(SRC, 'store'))
  .filter((f) => f.endsWith('.ts'))
  .map((f) => `store/${f}`);

t.test('the checker finds a cycle when there is one', async (t) => {
  const knotted = new Map([
    ['store/a.ts', ['store/b.ts']],
    ['store/b.ts', ['store/c.ts']],
    ['store/c.ts', ['store/a.ts', 'store/records.ts']],
    ['store/records.ts', []],
  ]);
  t.same(findCycles(knotted), [['store/a.ts', 'store/b.ts', 'store/c.ts', 'store/a.ts']]);
  t.same(findCycles(new Map([['store/a.ts', ['store/records.ts']], ['store/records.ts', []]])), []);
});

t.test('store/ has no import cycle, through any module it reaches', async (t) => {
  t.ok(storeFiles.length > 5, `${storeFiles.length} store files read`);
  const cycles = findCycles(graphFrom(storeFiles));
  t.same(cycles.map((c) => c.join(' -> ')), [], 'no cycles');
});

t.test('store/ imports only downwards: its own files, oci/ and the leaf modules', async (t) => {
  const upward: string[] = [];
  for (const file of storeFiles) {
    for (const dep of importsOf(file)) {
      const rel = relative('.', dep);
      if (rel.startsWith('store/') || BELOW_STORE.some((re) => re.test(rel))) continue;
      upward.push(`${file} -> ${rel}`);
    }
  }
  t.same(upward, [], 'no import from http/, resolve/, tiers/, main or config');
  const reached = graphFrom(storeFiles);
  for (const [file, deps] of reached) {
    if (file.startsWith('store/')) continue;
    t.same(deps.filter((d) => d.startsWith('store/')), [], `${file} (below store/) imports nothing from store/`);
  }
});

t.test('store/records.ts, the record shapes, is the bottom of store/', async (t) => {
  t.same(importsOf('store/records.ts').filter((d) => d.startsWith('store/')), []);
});
