// The Grafana dashboard (config/grafana/cove.json) and the Prometheus rules
// (config/prometheus/cove-rules.yml) against the metrics Cove really exposes: every metric name
// their PromQL uses must be declared in a real Cove's /metrics, scraped over TLS from a node with a
// peer after a pull; the metrics added for them (certificate expiry, peer table by state, data
// directory space) carry the real values; the dashboard is structurally importable; and promtool
// accepts the rules and their unit tests (config/prometheus/cove-rules.test.yml).
//
// promtool comes with Debian's `prometheus` package; without it the promtool subtests skip,
// except under CI, where they fail.
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { makeCertificates } from '../../src/cli/cert.js';
import { ROOT, which } from '../e2e/real.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';
import { FakePeer } from '../helpers/fake-peer.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { makeImage } from '../helpers/images.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { pullImage } from '../helpers/site.js';

const DASHBOARD = join(ROOT, 'config', 'grafana', 'cove.json');
const RULES = join(ROOT, 'config', 'prometheus', 'cove-rules.yml');
const RULES_TESTS = join(ROOT, 'config', 'prometheus', 'cove-rules.test.yml');

// ---- Reading PromQL, the rules file and the exposition ----

/** PromQL words that look like metric names but are keywords or modifiers. */
const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'and', 'or', 'unless', 'atan2', 'inf', 'nan']);

/**
 * The metric names a PromQL expression selects: what is left once strings, label matchers, range
 * and subquery brackets, label lists of by/without/on/ignoring/group_*, Grafana variables and
 * numbers are taken out, minus function names (a word followed by "(") and keywords.
 */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ');
  const names = new Set<string>();
  for (const m of bare.matchAll(/(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()/g)) {
    if (!PROMQL_WORDS.has(m[1]!.toLowerCase())) names.add(m[1]!);
  }
  return [...names];
}

/**
 * Every `expr:` of a Prometheus rules file, one-line or block scalar (`|`, `>`, with chomping),
 * read line by line: the project has no YAML parser among its dependencies, and the file's
 * layout is ours. promtool (below) checks the file as YAML.
 */
function ruleExprs(text: string): string[] {
  const lines = text.split('\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)(?:-\s+)?expr:\s*(.*)$/.exec(lines[i]!);
    if (!m) continue;
    const indent = m[1]!.length;
    const rest = m[2]!.trim();
    if (/^[|>][-+]?$/.test(rest)) {
      const body: string[] = [];
      while (i + 1 < lines.length && (lines[i + 1]!.trim() === '' || lines[i + 1]!.search(/\S/) > indent)) body.push(lines[++i]!);
      out.push(body.join('\n').trim());
    } else {
      out.push(rest.replace(/^'(.*)'$/, '$1').replace(/^"(.*)"$/, '$1'));
    }
  }
  return out;
}

/** Metrics an alert's annotations query (`{{ with printf "metric{…}" … | query }}`). */
function annotationMetrics(text: string): string[] {
  return [...text.matchAll(/printf\s+"([a-zA-Z_:][\w:]*)[^|]*\|\s*query/g)].map((m) => m[1]!);
}

/** The alert blocks of a rules file: from one `- alert:` line to the next (or the next group/rule). */
function alertBlocks(text: string): Array<{ name: string; text: string }> {
  const parts = text.split(/^(?=\s*- (?:alert|record|name):)/m);
  return parts
    .map((part) => ({ name: /^\s*- alert:\s*(\S+)/.exec(part)?.[1] ?? '', text: part }))
    .filter((b) => b.name !== '');
}

/** Metric family and type by the `# TYPE` lines of an exposition. */
function declaredTypes(exposition: string): Map<string, string> {
  const types = new Map<string, string>();
  for (const m of exposition.matchAll(/^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$/gm)) types.set(m[1]!, m[2]!);
  return types;
}

/** Whether `name` is in the exposition: declared itself, or a _bucket/_sum/_count of a declared histogram or summary. */
function exposed(name: string, types: Map<string, string>): boolean {
  if (types.has(name)) return true;
  const base = /^(.*)_(?:bucket|sum|count)$/.exec(name)?.[1];
  const type = base === undefined ? undefined : types.get(base);
  return type === 'histogram' || (type === 'summary' && !name.endsWith('_bucket'));
}

/** Sample values by `name{labels}` as written. */
function samples(exposition: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of exposition.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

interface Panel {
  id?: unknown;
  type?: unknown;
  title?: unknown;
  gridPos?: { h?: unknown; w?: unknown; x?: unknown; y?: unknown };
  datasource?: { type?: unknown; uid?: unknown };
  targets?: Array<{ expr?: unknown; refId?: unknown }>;
  panels?: Panel[];
}
interface Dashboard {
  schemaVersion?: unknown;
  title?: unknown;
  uid?: unknown;
  templating?: { list?: Array<{ name?: unknown; type?: unknown; query?: unknown; definition?: unknown }> };
  panels?: Panel[];
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
const rulesText = readFileSync(RULES, 'utf8');
/** Every metric name the rules use: in their exprs and in their annotations' queries. */
const ruleMetricNames = [...new Set([...ruleExprs(rulesText).flatMap(metricNames), ...annotationMetrics(rulesText)])].sort();
const allPanels = (panels: Panel[] = []): Panel[] => panels.flatMap((p) => [p, ...allPanels(p.panels)]);
const queryPanels = allPanels(dashboard.panels).filter((p) => p.type !== 'row');
const dashboardExprs = queryPanels.flatMap((p) => (p.targets ?? []).map((q) => String(q.expr ?? '')));
/** Metrics the template variables query: label_values(metric{…}, label). */
const variableMetrics = (dashboard.templating?.list ?? []).flatMap((v) => {
  const query = typeof v.query === 'string' ? v.query : String((v.query as { query?: unknown } | undefined)?.query ?? '');
  const m = /label_values\(\s*([a-zA-Z_:][\w:]*)/.exec(query);
  return m ? [m[1]!] : [];
});

// ---- A real Cove to scrape ----

interface Node {
  cove: TestCove;
  /** Scrapes /metrics over TLS, trusting Cove's CA. */
  scrape(): Promise<string>;
  plainUrl: string;
  certPem: string;
  peer: FakePeer;
}

/**
 * A Cove with TLS (a certificate made by `cove cert`, valid 30 days) and a plain listener beside
 * it, whose one peer serves wrong bytes: asking for a manifest by digest quarantines the peer
 * (a manifest a peer sends is checked in the peer tier), then a whole image is pulled from the origin.
 */
async function startNode(t: Test): Promise<Node> {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [120_000, 40_000], seed: 'observability' });
  origin.putImage('proj/app', '1', image);
  const dir = mkdtempSync(join(tmpdir(), 'cove-obs-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const certs = makeCertificates({ hosts: ['localhost'], ips: ['127.0.0.1'], outDir: dir, days: 30 });
  const ca = readFileSync(certs.caCert);
  const peer = await FakePeer.start('fake-obs');
  t.teardown(() => peer.close());
  peer.manifests.set(image.manifestDigest, { bytes: Buffer.concat([image.manifest, Buffer.from(' ')]), mediaType: image.mediaType });
  peer.behaviour = 'wrong-bytes';
  const cove = await startTestCove(t, origin.url, {
    COVE_NODE_ID: 'node-obs',
    COVE_TLS_CERT: certs.cert,
    COVE_TLS_KEY: certs.key,
    COVE_LISTEN_HTTP: '127.0.0.1:0',
    COVE_PEERS: peer.url,
    COVE_MAX_CACHE_BYTES: '1GiB',
  });
  const plainUrl = `http://127.0.0.1:${cove.httpPort}`;
  // Bounded wait for the peer's admission.
  for (let i = 0; i < 200; i++) {
    const table = JSON.parse((await fetchAll(`${plainUrl}/_cove/peers`)).body.toString()) as { peers: Array<{ state: string }> };
    if (table.peers.some((p) => p.state === 'live')) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  const m = await fetchAll(`${plainUrl}/v2/proj/app/manifests/${image.manifestDigest}`);
  t.equal(sha256(m.body), image.manifestDigest, "the peer's wrong manifest was refused; the origin's was served");
  await pullImage(plainUrl, 'proj/app', '1', image);
  // Bounded wait for the fills to commit (TestCove.fillsDone asks over TLS without the CA).
  for (let i = 0; i < 200; i++) {
    const health = JSON.parse((await fetchAll(`${plainUrl}/healthz`)).body.toString()) as { activeFills: number };
    if (health.activeFills === 0) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    cove,
    plainUrl,
    certPem: readFileSync(certs.cert, 'utf8'),
    peer,
    async scrape() {
      const r = await fetchAll(`${cove.url}/metrics`, { ca });
      t.equal(r.status, 200, 'GET /metrics over TLS answers 200');
      return r.body.toString();
    },
  };
}

// ---- The tests ----

t.test('the extractors find what the files use, and a misspelt name is caught', async (t) => {
  t.same(metricNames('sum by (instance) (rate(cove_requests_total{instance=~"$instance",result=~"hit|stale"}[$__rate_interval])) / 2'), ['cove_requests_total']);
  t.same(metricNames('cove_tls_certificate_expiry_timestamp_seconds - time() < 14 * 86400'), ['cove_tls_certificate_expiry_timestamp_seconds']);
  t.same(metricNames('rate(x_total[1d] offset 1h) and on (instance) group_left (site) cove_info or vector(0)').sort(), ['cove_info', 'x_total']);
  t.same(metricNames('sum(nodejs_gc_duration_seconds_sum) by (instance) > 1e3'), ['nodejs_gc_duration_seconds_sum']);
  t.same(ruleExprs('      - alert: A\n        expr: up == 0\n        for: 1m\n      - alert: B\n        expr: |\n          a\n          / b\n        for: 2m\n'), ['up == 0', 'a\n          / b']);
  const types = new Map([['cove_requests_total', 'counter'], ['nodejs_gc_duration_seconds', 'histogram']]);
  t.ok(exposed('cove_requests_total', types) && exposed('nodejs_gc_duration_seconds_sum', types) && exposed('nodejs_gc_duration_seconds_bucket', types));
  t.notOk(exposed('cove_request_total', types), 'a misspelt name is not found');
  t.notOk(exposed('cove_requests_total_sum', types), 'a suffix counts only on a histogram or summary');

  t.same(annotationMetrics('x: "{{ with printf "cove_upstream_last_error{instance=%q}" $labels.instance | query }}"'), ['cove_upstream_last_error']);

  const dashNames = new Set([...dashboardExprs.flatMap(metricNames), ...variableMetrics]);
  t.ok(ruleExprs(rulesText).length >= 10, `the rules file has ${ruleExprs(rulesText).length} exprs`);
  t.equal(ruleExprs(rulesText).length, alertBlocks(rulesText).length, 'one expr per alert');
  t.ok(annotationMetrics(rulesText).includes('cove_upstream_last_error'), 'the breaker alert queries the last error class');
  t.ok(ruleMetricNames.length > 10, `the rules use ${ruleMetricNames.length} metric names`);
  t.ok(dashNames.size > 10, `the dashboard uses ${dashNames.size} metric names`);
  t.ok(dashboardExprs.length > 40, `the dashboard has ${dashboardExprs.length} queries`);
});

t.test('every metric the dashboard and the rules use is in a real Cove\'s /metrics; the metrics added for them carry real state', async (t) => {
  const node = await startNode(t);
  const text = await node.scrape();
  const types = declaredTypes(text);
  t.ok(types.size > 40, `the exposition declares ${types.size} metric families`);

  const ruleNames = ruleMetricNames;
  const dashNames = [...new Set([...dashboardExprs.flatMap(metricNames), ...variableMetrics])].sort();
  t.same(ruleNames.filter((n) => !exposed(n, types)), [], `all ${ruleNames.length} names in cove-rules.yml are exposed: ${ruleNames.join(' ')}`);
  t.same(dashNames.filter((n) => !exposed(n, types)), [], `all ${dashNames.length} names in cove.json are exposed: ${dashNames.join(' ')}`);

  const s = samples(text);
  // The certificate: its notAfter, which `cove cert --days 30` put 30 days from now.
  const notAfter = Date.parse(new X509Certificate(node.certPem).validTo) / 1000;
  const expiry = s.get('cove_tls_certificate_expiry_timestamp_seconds');
  t.equal(expiry, notAfter, `certificate expiry is the certificate's notAfter (${new Date(notAfter * 1000).toISOString()})`);
  const days = ((expiry ?? 0) - Date.now() / 1000) / 86400;
  t.ok(days > 29.9 && days <= 30.01, `the certificate expires in ${days.toFixed(3)} days`);

  // The peer table: the peer that sent wrong bytes is quarantined, in /metrics as in /_cove/peers.
  const table = JSON.parse((await fetchAll(`${node.plainUrl}/_cove/peers`)).body.toString()) as { peers: Array<{ id: string; state: string }> };
  t.same(table.peers.map((p) => [p.id, p.state]), [['fake-obs', 'quarantined']], 'the peer table has the peer quarantined');
  t.equal(s.get('cove_peers{state="quarantined"}'), 1, 'one quarantined peer');
  for (const state of ['live', 'down', 'unproven', 'unknown', 'other-site']) t.equal(s.get(`cove_peers{state="${state}"}`), 0, `no ${state} peer`);
  t.equal(s.get('cove_peers_live'), 0, 'a quarantined peer is not live');

  // The data directory's file system, as statfs sees it now.
  const fs = statfsSync(node.cove.dataDir);
  const label = `{path="${node.cove.dataDir}"}`;
  t.equal(s.get(`cove_data_dir_size_bytes${label}`), fs.blocks * fs.bsize, 'data directory size is its file system\'s');
  const free = s.get(`cove_data_dir_free_bytes${label}`) ?? -1;
  // Other writers share the disk: within 5 % of its size of what statfs says a moment later.
  t.ok(Math.abs(free - fs.bavail * fs.bsize) < 0.05 * fs.blocks * fs.bsize, `data directory free bytes ${free} ≈ ${fs.bavail * fs.bsize}`);
  t.ok(free > 0, 'some space is free');

  // The pull left series behind for the panels that need one.
  t.ok((s.get('cove_requests_total{result="miss"}') ?? 0) >= 1, 'misses counted');
  t.ok((s.get('cove_fetched_bytes_total{tier="origin"}') ?? 0) > 160_000, 'origin bytes counted');
  t.equal(s.get('cove_cache_limit_bytes'), 1024 ** 3, 'cache cap');
});

t.test('without TLS or peers the added metrics have no samples rather than false ones', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const cove = await startTestCove(t, origin.url);
  const text = (await fetchAll(`${cove.url}/metrics`)).body.toString();
  t.notOk(declaredTypes(text).has('cove_tls_certificate_expiry_timestamp_seconds'), 'no certificate, no expiry (a 0 would read as expired in 1970)');
  t.ok(declaredTypes(text).has('cove_peers'), 'cove_peers is declared');
  t.notOk([...samples(text).keys()].some((k) => k.startsWith('cove_peers{')), 'but has no samples without peers configured');
  t.ok((samples(text).get(`cove_data_dir_free_bytes{path="${cove.dataDir}"}`) ?? 0) > 0, 'free space is reported without TLS too');
});

t.test('the dashboard is importable: datasource variable, node variable, panels with queries, ids and places', async (t) => {
  t.ok(typeof dashboard.schemaVersion === 'number' && dashboard.schemaVersion >= 36, `schemaVersion ${String(dashboard.schemaVersion)} >= 36`);
  t.equal(dashboard.title, 'Cove');
  t.equal(dashboard.uid, 'cove-edge', 'a fixed uid: re-importing replaces the dashboard');
  const vars = dashboard.templating?.list ?? [];
  const ds = vars.find((v) => v.name === 'datasource');
  t.equal(ds?.type, 'datasource', 'a datasource variable');
  t.equal(ds?.query, 'prometheus', 'of Prometheus data sources');
  t.ok(vars.some((v) => v.name === 'instance' && v.type === 'query'), 'a node (instance) variable');
  t.notOk(JSON.stringify(dashboard).includes('${DS_'), 'no ${DS_*} import input: the file also works when provisioned');

  const panels = allPanels(dashboard.panels);
  const ids = panels.map((p) => p.id);
  t.ok(ids.every((id) => typeof id === 'number'), 'every panel has a numeric id');
  t.equal(new Set(ids).size, ids.length, `panel ids are unique (${ids.length} panels)`);
  const bad: string[] = [];
  const cells = new Map<string, string>();
  for (const p of panels) {
    const name = `panel ${String(p.id)} "${String(p.title)}"`;
    const g = p.gridPos;
    if (!g || ![g.h, g.w, g.x, g.y].every((n) => Number.isInteger(n) && (n as number) >= 0)) {
      bad.push(`${name}: no gridPos`);
      continue;
    }
    if ((g.x as number) + (g.w as number) > 24 || (g.w as number) < 1 || (g.h as number) < 1) bad.push(`${name}: gridPos outside the 24 columns`);
    // No two panels cover the same cell.
    for (let y = g.y as number; y < (g.y as number) + (g.h as number); y++) {
      for (let x = g.x as number; x < (g.x as number) + (g.w as number); x++) {
        const other = cells.get(`${x},${y}`);
        if (other !== undefined) bad.push(`${name} overlaps ${other}`);
        cells.set(`${x},${y}`, name);
      }
    }
    if (p.type === 'row') continue;
    if (p.datasource?.type !== 'prometheus' || p.datasource.uid !== '${datasource}') bad.push(`${name}: datasource is not the $datasource variable`);
    if (!Array.isArray(p.targets) || p.targets.length === 0) bad.push(`${name}: no targets`);
    const refs = new Set<unknown>();
    for (const q of p.targets ?? []) {
      if (typeof q.expr !== 'string' || q.expr.trim() === '') bad.push(`${name}: a target without expr`);
      else if (!q.expr.includes('instance=~"$instance"')) bad.push(`${name}: "${q.expr}" is not filtered by the node variable`);
      if (refs.has(q.refId)) bad.push(`${name}: refId ${String(q.refId)} twice`);
      refs.add(q.refId);
    }
  }
  t.same(bad, [], 'every panel has a place, a Prometheus datasource and filtered queries; no two overlap');
  for (const title of ['Hit ratio (1h)', 'Bytes served by tier', 'Bytes fetched by tier', 'Upstream marked down (breaker open)', 'Last error per upstream', 'Stale answers', 'Fills', 'Digest mismatches and refused fills', 'Cache size against its cap', 'Disk-full fills', 'Evictions', 'Peer table by state', 'Client auth decisions', 'Certificate expiry by node', 'Memory', 'CPU']) {
    t.ok(panels.some((p) => p.title === title), `panel "${title}"`);
  }
});

t.test('every alert has a for:, a severity, a summary and a description', async (t) => {
  const blocks = alertBlocks(rulesText);
  const names = blocks.map((b) => b.name);
  for (const name of ['CoveUpstreamDown', 'CoveServingStale', 'CoveDiskFull', 'CoveDataDiskLow', 'CoveHitRatioFalling', 'CovePeerQuarantined', 'CoveCertificateExpiring', 'CoveCertificateExpiryImminent']) {
    t.ok(names.includes(name), `alert ${name}`);
  }
  t.equal(new Set(names).size, names.length, 'alert names are unique');
  const bad = blocks.flatMap((b) => {
    const missing = [/^\s+for: \d+[smhd]\s*$/m, /^\s+severity: (warning|critical)\s*$/m, /^\s+summary: \S/m, /^\s+description: \S/m].filter((re) => !re.test(b.text));
    return missing.length > 0 ? [`${b.name}: lacks ${missing.map(String).join(', ')}`] : [];
  });
  t.same(bad, [], `all ${blocks.length} alerts are complete`);
});

/** Under CI a missing promtool fails; elsewhere the test is a visible skip naming the package. */
function havePromtool(t: Test): boolean {
  if (which('promtool') !== null) return true;
  const reason = 'promtool not installed (apt-get install prometheus)';
  const ci = process.env.CI;
  if (ci && ci !== 'false' && ci !== '0') t.fail(`${reason} (CI is set, so this is a failure, not a skip)`);
  else t.pass('promtool present', { skip: reason });
  return false;
}

const promtool = (args: string[]) => spawnSync('promtool', args, { encoding: 'utf8', timeout: 60_000 });

t.test('promtool check rules accepts the rules', async (t) => {
  if (!havePromtool(t)) return;
  const r = promtool(['check', 'rules', RULES]);
  t.equal(r.status, 0, `promtool check rules exits 0 (${r.stdout}${r.stderr})`);
  t.match(r.stdout, /SUCCESS: \d+ rules found/);
  t.match(r.stdout, new RegExp(`SUCCESS: ${alertBlocks(rulesText).length} rules found`), 'every alert counted');
});

t.test('promtool test rules: the alerts fire on the series given and not otherwise', async (t) => {
  if (!havePromtool(t)) return;
  const tests = readFileSync(RULES_TESTS, 'utf8');
  for (const name of ['CoveUpstreamDown', 'CoveCertificateExpiring', 'CoveCertificateExpiryImminent', 'CovePeerQuarantined', 'CoveDiskFull', 'CoveHitRatioFalling']) {
    t.ok(tests.includes(`alertname: ${name}\n`), `the unit tests cover ${name}`);
  }
  const r = promtool(['test', 'rules', RULES_TESTS]);
  t.equal(r.status, 0, `promtool test rules exits 0 (${r.stdout}${r.stderr})`);
  t.match(r.stdout, /SUCCESS/);

  // The unit tests bite: with the breaker alert never firing, or the certificate warning at 1 day, they fail.
  const dir = mkdtempSync(join(tmpdir(), 'cove-rules-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'cove-rules.test.yml'), tests);
  for (const [what, from, to] of [
    ['breaker alert that never fires', 'expr: cove_upstream_breaker_open == 1', 'expr: cove_upstream_breaker_open == 2'],
    ['certificate warning at 1 day instead of 14', '< 14 * 86400', '< 1 * 86400'],
  ] as const) {
    t.ok(rulesText.includes(from), `the rules contain "${from}"`);
    writeFileSync(join(dir, 'cove-rules.yml'), rulesText.replace(from, to));
    const broken = promtool(['test', 'rules', join(dir, 'cove-rules.test.yml')]);
    t.not(broken.status, 0, `a ${what} fails the unit tests`);
    t.match(broken.stdout + broken.stderr, /FAILED/);
  }
});
