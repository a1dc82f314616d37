// The HTML of the status page (GET / and /_cove/): one self-contained document, inline CSS and a
// little JS that fetches /_cove/status.json every 5 s and renders it with textContent and DOM
// nodes only (never innerHTML of data). No external assets; the CSP below allows nothing else.
import { createHash } from 'node:crypto';

const STYLE = `
:root{--fg:#1d2430;--mute:#667085;--line:#e4e7ec;--bg:#f7f8fa;--card:#fff;--ok:#12805c;--bad:#c4320a;--warn:#b54708}
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;gap:16px;align-items:baseline;padding:12px 20px;background:#101828;color:#fff}
header h1{font-size:18px;margin:0}header span{color:#d0d5dd;font-size:13px}#updated{margin-left:auto}
main{padding:16px 20px;display:grid;gap:14px;grid-template-columns:repeat(4,minmax(0,1fr))}@media (max-width:900px){main{grid-template-columns:minmax(0,1fr)}section.half,section.wide{grid-column:auto}}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px;min-width:0}
section.wide{grid-column:1/-1}section.half{grid-column:span 2}h2{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:var(--mute);margin:0 0 8px}
.big{font-size:30px;font-weight:600}.sub{color:var(--mute);font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:3px 6px;border-bottom:1px solid var(--line);white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:260px}
th{color:var(--mute);font-weight:500}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.closed,.live{color:var(--ok);font-weight:600}.open,.down,.quarantined{color:var(--bad);font-weight:600}.unknown,.other-site{color:var(--warn)}
.legend{display:flex;gap:12px;flex-wrap:wrap;font-size:12px;color:var(--mute)}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
svg{width:100%;height:140px;display:block}.empty{color:var(--mute);font-style:italic}
`;

const SCRIPT = `
(function(){
var $=function(id){return document.getElementById(id)};
var COLORS={local:'#12805c',origin:'#f79009'};var PALETTE=['#2e90fa','#7a5af8','#ee46bc','#15b79e','#875bf7','#667085'];
function color(t){if(COLORS[t])return COLORS[t];var h=0;for(var i=0;i<t.length;i++)h=(h*31+t.charCodeAt(i))>>>0;return PALETTE[h%PALETTE.length]}
function human(n){if(n==null)return '–';var u=['B','KiB','MiB','GiB','TiB'],i=0;while(n>=1024&&i<u.length-1){n/=1024;i++}return (i?n.toFixed(1):String(n))+' '+u[i]}
function exact(n){return Number(n).toLocaleString('en-US')+' B'}
function ago(ms){if(!ms)return '–';var s=Math.max(0,Math.round((Date.now()-ms)/1000));return s<60?s+' s ago':s<3600?Math.round(s/60)+' min ago':Math.round(s/3600)+' h ago'}
function set(id,text){$(id).textContent=text}
function el(tag,text,cls){var e=document.createElement(tag);if(text!=null)e.textContent=String(text);if(cls)e.className=cls;return e}
function table(id,head,rows,empty){var t=$(id);t.textContent='';if(!rows.length){var p=el('tr');var c=el('td',empty,'empty');c.colSpan=head.length;p.appendChild(c);t.appendChild(p);return}
var h=el('tr');head.forEach(function(x){h.appendChild(el('th',x[0],x[1]))});t.appendChild(h);
rows.forEach(function(r){var tr=el('tr');r.forEach(function(v,i){var td=el('td',v&&v.t!=null?v.t:v,(head[i][1]||'')+(v&&v.c?' '+v.c:''));if(v&&v.title)td.title=v.title;tr.appendChild(td)});t.appendChild(tr)})}
var NS='http://www.w3.org/2000/svg';
function chart(series){var svg=$('chart');svg.textContent='';var W=600,H=140,P=4;svg.setAttribute('viewBox','0 0 '+W+' '+H);svg.setAttribute('preserveAspectRatio','none');
var tiers={};series.forEach(function(s){Object.keys(s.served).forEach(function(k){tiers[k]=1});Object.keys(s.fetched).forEach(function(k){tiers[k]=1})});
var max=1;series.forEach(function(s){var a=0,b=0;for(var k in s.served)a+=s.served[k];for(k in s.fetched)b+=s.fetched[k];max=Math.max(max,a,b)});
var n=60,bw=W/n;var off=n-series.length;
series.forEach(function(s,i){var x=(off+i)*bw,y=H-P;Object.keys(s.served).sort().forEach(function(k){var h=(H-2*P)*s.served[k]/max;var r=document.createElementNS(NS,'rect');r.setAttribute('x',(x+1).toFixed(1));r.setAttribute('width',Math.max(1,bw-2).toFixed(1));r.setAttribute('y',(y-h).toFixed(1));r.setAttribute('height',h.toFixed(1));r.setAttribute('fill',color(k));var tt=document.createElementNS(NS,'title');tt.textContent=k+': '+human(s.served[k])+' served';r.appendChild(tt);svg.appendChild(r);y-=h})});
var pts=series.map(function(s,i){var b=0;for(var k in s.fetched)b+=s.fetched[k];return ((off+i+0.5)*bw).toFixed(1)+','+(H-P-(H-2*P)*b/max).toFixed(1)});
var pl=document.createElementNS(NS,'polyline');pl.setAttribute('points',pts.join(' '));pl.setAttribute('fill','none');pl.setAttribute('stroke','#101828');pl.setAttribute('stroke-width','1.5');pl.setAttribute('stroke-dasharray','4 3');svg.appendChild(pl);
pts.forEach(function(p){var xy=p.split(','),m=document.createElementNS(NS,'line');m.setAttribute('x1',(Number(xy[0])-bw/2).toFixed(1));m.setAttribute('x2',(Number(xy[0])+bw/2).toFixed(1));m.setAttribute('y1',xy[1]);m.setAttribute('y2',xy[1]);m.setAttribute('stroke','#101828');m.setAttribute('stroke-width','3');svg.appendChild(m)});
var base=document.createElementNS(NS,'line');base.setAttribute('x1','0');base.setAttribute('x2',String(W));base.setAttribute('y1',String(H-P));base.setAttribute('y2',String(H-P));base.setAttribute('stroke','#d0d5dd');svg.appendChild(base);
var lg=$('legend');lg.textContent='';Object.keys(tiers).sort().forEach(function(k){var s=el('span',k);var i=el('i');i.style.background=color(k);s.insertBefore(i,s.firstChild);lg.appendChild(s)});
lg.appendChild(el('span','bars: served by tier · black marks: fetched from upstream (all tiers) · peak '+human(max)+'/min'))}
function render(d){
set('node',d.node.id+' · site '+d.node.site+' · v'+d.node.version+' · up '+Math.round(d.uptimeSeconds/60)+' min');
var hr=d.hitRatio;set('hit-ratio',hr.ratio==null?'–':(hr.ratio*100).toFixed(1)+' %');set('hits',hr.hits);set('misses',hr.misses);
var b=d.bytes;set('saved',human(b.saved));set('saved-bytes',exact(b.saved));set('saved-ratio',b.savedRatio==null?'–':(b.savedRatio*100).toFixed(1)+' % of '+human(b.servedTotal)+' served');
set('origin',human(b.fromOrigin));set('origin-bytes',exact(b.fromOrigin));set('fetched-total',human(b.fetchedTotal)+' from all upstream tiers');
var tiers=Object.keys(Object.assign({},b.served,b.fetched)).sort();
table('tiers',[['tier'],['served','n'],['fetched','n']],tiers.map(function(k){return [k,{t:human(b.served[k]||0),title:exact(b.served[k]||0)},{t:human(b.fetched[k]||0),title:exact(b.fetched[k]||0)}]}),'nothing served yet');
chart(d.series);
table('upstreams',[['upstream'],['kind'],['state'],['since'],['stale while down','n'],['opened','n'],['last error']],d.upstreams.map(function(u){return [u.name,u.kind,{t:(u.state==='open'?'unreachable':'reachable')+(u.state==='open'&&u.probeAt?' (probe '+new Date(u.probeAt).toLocaleTimeString()+')':''),c:u.state},u.since?{t:ago(u.since),title:new Date(u.since).toLocaleString()}:'start',u.staleWhileDown,u.opened,{t:u.lastErrorClass?u.lastErrorClass+' · '+ago(u.lastErrorAt):'–',title:u.lastError||''}]}),'no upstreams');
var os=d.upstreams.filter(function(u){return u.kind==='origin'});var down=os.filter(function(u){return u.state==='open'});
var st=$('origin-state');st.textContent=down.length?'unreachable ('+down.map(function(u){return u.name}).join(', ')+')':'reachable';st.className='big '+(down.length?'open':'closed');
set('origin-since',down.length?'since '+new Date(Math.min.apply(null,down.map(function(u){return u.since||d.now}))).toLocaleTimeString()+' · '+down.reduce(function(n,u){return n+u.staleWhileDown},0)+' stale answers meanwhile · last error: '+down.map(function(u){return u.lastErrorClass||'?'}).join(', '):'');
if(d.peers===null)table('peers',[['peer']],[],'no peers configured');
else table('peers',[['id'],['address'],['state'],['last seen'],['hits','n'],['fetched','n'],['served','n']],d.peers.map(function(p){return [p.id||'?',p.address||'–',{t:p.state,c:p.state},p.lastSeenAgoS==null?'–':p.lastSeenAgoS+' s ago',p.hits,human(p.bytes),p.served]}),'no peers known yet');
var c=d.cache;set('cache',human(c.bytes)+(c.limit?' of '+human(c.limit):' (no cap)')+' · '+d.images.count+' images · '+c.activeFills+' fills running · '+c.evictions+' evictions');
function ref(i){return i.repo+(i.tag?':'+i.tag:'@'+i.digest.slice(0,19))}
table('largest',[['image'],['upstream'],['size','n'],['last pull'],['pinned']],d.images.largest.map(function(i){return [{t:ref(i),title:i.digest},i.upstream,{t:human(i.size),title:exact(i.size)},ago(i.lastAccess),i.pinned?'yes':'']}),'nothing cached yet');
table('most-pulled',[['repository'],['upstream'],['pulls','n'],['last pull']],d.images.mostPulled.map(function(p){return [p.repo,p.upstream,p.pulls,ago(p.last)]}),'no pulls since start');
set('updated','updated '+new Date(d.now).toLocaleTimeString());document.body.dataset.rendered=String(Number(document.body.dataset.rendered||0)+1)}
function poll(){fetch('/_cove/status.json',{cache:'no-store'}).then(function(r){if(!r.ok)throw new Error('HTTP '+r.status);return r.json()}).then(render).catch(function(e){set('updated','status unavailable: '+e.message)}).then(function(){setTimeout(poll,5000)})}
poll()})();
`;

const BODY = `<header><h1>Cove</h1><span id="node">…</span><span id="updated">loading…</span></header>
<main>
<section><h2>Hit ratio</h2><div class="big" id="hit-ratio">–</div><div class="sub"><span id="hits">0</span> hits · <span id="misses">0</span> misses (hits: hit, revalidated, stale)</div></section>
<section><h2>Bytes saved</h2><div class="big" id="saved">–</div><div class="sub">served from cache: <span id="saved-bytes">–</span> · <span id="saved-ratio"></span></div></section>
<section><h2>Fetched from origin</h2><div class="big" id="origin">–</div><div class="sub"><span id="origin-bytes">–</span> · <span id="fetched-total"></span></div></section>
<section><h2>Origin</h2><div class="big" id="origin-state">–</div><div class="sub" id="origin-since"></div><div class="sub" id="cache"></div></section>
<section class="wide"><h2>Bytes by tier, per minute (last 60 min)</h2><svg id="chart" role="img" aria-label="bytes by tier per minute"></svg><div class="legend" id="legend"></div></section>
<section class="half"><h2>Tiers</h2><table id="tiers"></table></section>
<section class="half"><h2>Upstreams</h2><table id="upstreams"></table></section>
<section class="wide"><h2>Peers</h2><table id="peers"></table></section>
<section class="half"><h2>Largest images</h2><table id="largest"></table></section>
<section class="half"><h2>Most pulled (pulls since start)</h2><table id="most-pulled"></table></section>
</main>`;

const hash = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;

/** The page itself. */
export const STATUS_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Cove status</title><style>${STYLE}</style></head>
<body>${BODY}<script>${SCRIPT}</script></body></html>
`;

/** Headers of the page: no caching, no sniffing, and a CSP that allows only the inline parts and same-origin fetches. */
export const STATUS_PAGE_HEADERS: Record<string, string> = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'content-security-policy': `default-src 'none'; script-src ${hash(SCRIPT)}; style-src ${hash(STYLE)}; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
};
