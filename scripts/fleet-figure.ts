// Draws bench/fleet.svg from one run of the fleet scenario (scripts/bench-fleet.ts): the origin,
// the regional parent and the sites with their nodes as boxes, each link a line whose thickness is
// proportional to the bytes it carried and whose label says how many (MB, and × the image). Plain
// SVG text, no dependencies; the numbers are the run's own.

export interface FleetFigureNode {
  id: string;
  /** The node's cold pull, in seconds. */
  seconds: number;
  /** Bytes it fetched from the parent and from its siblings (its /metrics). */
  fromParent: number;
  fromPeers: number;
}

export interface FleetFigureSite {
  name: string;
  /** Bytes the parent→site link carried down. */
  linkBytes: number;
  nodes: FleetFigureNode[];
}

export interface FleetFigureData {
  title: string;
  subtitle: string;
  imageBytes: number;
  /** Bytes the origin→parent link carried down. */
  originLinkBytes: number;
  /** Blob bytes in the origin's access log. */
  originServedBytes: number;
  sites: FleetFigureSite[];
  /** Lines under the drawing (what was measured and how). */
  notes: string[];
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** The figure as an SVG document. */
export function fleetSvg(d: FleetFigureData): string {
  const W = 1000;
  const siteW = 300;
  const gap = (W - d.sites.length * siteW) / (d.sites.length + 1);
  const out: string[] = [];
  const text = (x: number, y: number, s: string, o: { size?: number; weight?: string; anchor?: string; fill?: string } = {}) =>
    out.push(
      `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" font-size="${o.size ?? 12}" text-anchor="${o.anchor ?? 'middle'}"${o.weight ? ` font-weight="${o.weight}"` : ''} fill="${o.fill ?? '#222'}">${esc(s)}</text>`,
    );
  const box = (x: number, y: number, w: number, h: number, fill: string, stroke = '#555') =>
    out.push(`<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${w.toFixed(1)}" height="${h}" rx="6" fill="${fill}" stroke="${stroke}"/>`);

  // Link thickness: proportional to bytes, the largest link 18 px (but never thinner than a hairline).
  const maxBytes = Math.max(d.originLinkBytes, ...d.sites.map((s) => s.linkBytes), ...d.sites.flatMap((s) => s.nodes.map((n) => n.fromPeers)), 1);
  const width = (bytes: number) => Math.max(0.75, (18 * bytes) / maxBytes);
  // A link's label sits beside its lower end (a vertical link: beside its middle), clear of the line.
  const link = (x1: number, y1: number, x2: number, y2: number, bytes: number, colour: string, label: string[]) => {
    out.push(`<line x1="${x1.toFixed(1)}" y1="${y1}" x2="${x2.toFixed(1)}" y2="${y2}" stroke="${colour}" stroke-width="${width(bytes).toFixed(2)}" stroke-linecap="round"/>`);
    const vertical = Math.abs(x2 - x1) < 1;
    const lx = x2 + (x2 < x1 - 1 ? -1 : 1) * (width(bytes) / 2 + 12);
    const ly = vertical ? (y1 + y2) / 2 - 4 : y2 - 34;
    label.forEach((l, i) => text(lx, ly + i * 14, l, { anchor: x2 < x1 - 1 ? 'end' : 'start', size: 12, weight: i === 0 ? 'bold' : undefined }));
  };
  const times = (bytes: number) => `${(bytes / d.imageBytes).toFixed(2)}× the image`;

  const H = 650 + d.notes.length * 16;
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`);
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  text(W / 2, 26, d.title, { size: 17, weight: 'bold' });
  text(W / 2, 46, d.subtitle, { size: 12, fill: '#444' });

  // Origin and parent.
  const ow = 260;
  const oy = 66;
  box(W / 2 - ow / 2, oy, ow, 44, '#f3e3c3');
  text(W / 2, oy + 19, 'origin (docker-registry)', { weight: 'bold' });
  text(W / 2, oy + 35, `served ${mb(d.originServedBytes)} of blobs (${(d.originServedBytes / d.imageBytes).toFixed(2)}×)`, { size: 11 });
  const py = 216;
  box(W / 2 - ow / 2, py, ow, 44, '#d6e6f5');
  text(W / 2, py + 19, 'regional parent Cove', { weight: 'bold' });
  text(W / 2, py + 35, 'COVE_UPSTREAM = origin', { size: 11 });
  link(W / 2, oy + 44, W / 2, py, d.originLinkBytes, '#b5651d', [mb(d.originLinkBytes), times(d.originLinkBytes)]);

  // Sites.
  const sy = 400;
  const sh = 190;
  for (const [i, s] of d.sites.entries()) {
    const sx = gap + i * (siteW + gap);
    const cx = sx + siteW / 2;
    link(W / 2, py + 44, cx, sy, s.linkBytes, '#1f5fa8', [mb(s.linkBytes), times(s.linkBytes)]);
    box(sx, sy, siteW, sh, '#eef5ea');
    const peers = s.nodes.reduce((n, x) => n + x.fromPeers, 0);
    const slowest = Math.max(...s.nodes.map((n) => n.seconds));
    text(cx, sy + 18, `${s.name}: ${s.nodes.length} Coves, one COVE_PEERS list`, { weight: 'bold' });
    text(cx, sy + 34, `slowest pull ${slowest.toFixed(1)} s · ${mb(peers)} between siblings`, { size: 11 });
    const nw = (siteW - 16 - (s.nodes.length - 1) * 8) / s.nodes.length;
    for (const [j, n] of s.nodes.entries()) {
      const nx = sx + 8 + j * (nw + 8);
      const ny = sy + 96;
      // The node's share from the parent, from its own thin-link fetch point at the site box's top.
      link(cx, sy + 42, nx + nw / 2, ny, n.fromParent, '#1f5fa8', []);
      box(nx, ny, nw, 82, '#fff');
      text(nx + nw / 2, ny + 16, n.id, { size: 11, weight: 'bold' });
      text(nx + nw / 2, ny + 32, `pull ${n.seconds.toFixed(1)} s`, { size: 11 });
      text(nx + nw / 2, ny + 48, `parent ${mb(n.fromParent)}`, { size: 10, fill: '#1f5fa8' });
      text(nx + nw / 2, ny + 63, `siblings ${mb(n.fromPeers)}`, { size: 10, fill: '#3a7d2c' });
    }
  }

  // Legend and notes.
  const ly = sy + sh + 26;
  out.push(`<line x1="40" y1="${ly - 4}" x2="80" y2="${ly - 4}" stroke="#1f5fa8" stroke-width="${width(d.imageBytes).toFixed(2)}"/>`);
  text(88, ly, `line thickness ∝ bytes carried; this thickness = one copy of the image (${mb(d.imageBytes)})`, { anchor: 'start', size: 12 });
  d.notes.forEach((note, i) => text(40, ly + 22 + i * 16, note, { anchor: 'start', size: 11, fill: '#444' }));
  out.push('</svg>');
  return out.join('\n') + '\n';
}
