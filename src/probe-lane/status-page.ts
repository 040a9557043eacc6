// The lane's live status page (GET /): one self-contained HTML document (no external scripts, styles or fonts)
// that polls /state every second and draws the last two minutes of in flight, queued and shed against the limit, and
// lists the heaviest flows (callers) when fair queuing is on.

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>doorman status</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#1b1f24;background:#fafbfc}
h1{font-size:1.3rem;margin:0 0 1rem}h1 small{font-weight:400;color:#59636e;font-size:.9rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.75rem;max-width:900px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.6rem .8rem}
.card b{display:block;font-size:1.4rem}
.ok{color:#1a7f37}.bad{color:#cf222e}.warn{color:#9a6700}
.bar{height:8px;background:#eaeef2;border-radius:4px;overflow:hidden;margin-top:.3rem}
.bar i{display:block;height:100%;background:#0969da}
#chart{margin-top:1rem;background:#fff;border:1px solid #d0d7de;border-radius:6px;max-width:900px;width:100%;height:auto}
#chart text{font:11px system-ui,sans-serif;fill:#59636e}
#err{color:#cf222e}
#flows{margin-top:1rem;border-collapse:collapse;background:#fff;max-width:900px;width:100%}
#flows th,#flows td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:right}
#flows th:first-child,#flows td:first-child{text-align:left;font-family:ui-monospace,monospace;word-break:break-all}
</style></head><body>
<h1>doorman <span id="svc"></span> <small id="ver"></small></h1>
<div class="grid" id="grid"></div>
<svg id="chart" viewBox="0 0 900 180" role="img" aria-label="in flight, queued and shed over the last two minutes">
<text x="44" y="16">last 2 minutes: in flight, queued, shed per second, and the limit</text>
<g id="axes"></g>
<path id="limit" fill="none" stroke="#1a7f37" stroke-dasharray="6 4" stroke-width="1.5"/>
<path id="inflight" fill="none" stroke="#0969da" stroke-width="2"/>
<path id="queued" fill="none" stroke="#9a6700" stroke-width="2"/>
<path id="shed" fill="none" stroke="#cf222e" stroke-width="2"/>
<g id="legend"></g>
</svg>
<table id="flows" hidden><caption>heaviest flows (callers): in flight, queued, shed</caption>
<thead><tr><th>flow</th><th>in flight</th><th>queued</th><th>shed</th></tr></thead><tbody></tbody></table>
<p id="err"></p>
<script>
const pct = (x) => Math.round(x * 100) + '%';
const fields = [
  ['phase', s => s.phase, s => s.phase === 'serving'],
  ['ready', s => s.ready ? 'yes' : 'no', s => s.ready],
  ['limit', s => s.baseLimit && s.baseLimit !== s.limit ? s.limit + ' / ' + s.baseLimit : s.limit],
  ['in flight', s => s.inflight, null, s => s.limit ? s.inflight / s.limit : 0],
  ['queued', s => s.queued, s => s.queued === 0 ? true : null],
  ['shed', s => s.shed],
  ['completed', s => s.completed], ['failed', s => s.failed, s => s.failed === 0],
  ['warmup', s => pct(s.warmup.progress), null, s => s.warmup.progress],
  ['weight', s => s.warmup.weight + '%'],
  ['registered', s => s.registration.required ? (s.registration.registered ? 'yes' : 'no') : 'n/a', s => !s.registration.required || s.registration.registered],
  ['registry', s => s.registration.registryUp ? 'up' : 'down', s => s.registration.registryUp],
  ['app ready', s => s.app.ready ? 'yes' : 'no', s => s.app.ready],
  ['main loop', s => s.mainLoop.heartbeatAgeMs + ' ms', s => s.live]
];
const W = 900, H = 180, L = 44, R = 10, T = 26, B = 22, N = 120;
const hist = [];
let lastShed = null;
function path (vals, max) {
  const pw = W - L - R, ph = H - T - B;
  return vals.map((v, i) => (i ? 'L' : 'M') + (L + pw * (i + N - vals.length) / (N - 1)).toFixed(1) + ' ' + (T + ph - ph * Math.min(v, max) / max).toFixed(1)).join('');
}
function draw () {
  let max = 1;
  for (const h of hist) max = Math.max(max, h.limit, h.inflight, h.queued, h.shed);
  const step = Math.pow(10, Math.floor(Math.log10(max)));
  max = Math.ceil(max / step) * step;
  const ph = H - T - B;
  let axes = '';
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4, y = (T + ph - ph * i / 4).toFixed(1);
    axes += '<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y + '" y2="' + y + '" stroke="#eef1f4"/><text x="' + (L - 5) + '" y="' + (+y + 4) + '" text-anchor="end">' + (Number.isInteger(v) ? v : v.toFixed(1)) + '</text>';
  }
  axes += '<text x="' + L + '" y="' + (H - 6) + '">-2 min</text><text x="' + (W - R) + '" y="' + (H - 6) + '" text-anchor="end">now</text>';
  document.getElementById('axes').innerHTML = axes;
  for (const k of ['limit', 'inflight', 'queued', 'shed']) document.getElementById(k).setAttribute('d', path(hist.map(h => h[k]), max));
  const names = [['limit', '#1a7f37'], ['in flight', '#0969da'], ['queued', '#9a6700'], ['shed/s', '#cf222e']];
  let x = W - R - 300, lg = '';
  for (const [n, c] of names) { lg += '<rect x="' + x + '" y="7" width="9" height="9" fill="' + c + '"/><text x="' + (x + 12) + '" y="15">' + n + '</text>'; x += 75; }
  document.getElementById('legend').innerHTML = lg;
}
async function tick () {
  try {
    const s = await (await fetch('/state', { cache: 'no-store' })).json();
    document.getElementById('svc').textContent = s.service ? '· ' + s.service : '';
    document.getElementById('ver').textContent = s.version ? 'v' + s.version : '';
    document.getElementById('grid').innerHTML = fields.map(([name, v, ok, bar]) => {
      const good = ok ? ok(s) : null;
      const cls = good === true ? 'ok' : good === false ? 'bad' : '';
      const b = bar ? '<div class="bar"><i style="width:' + Math.min(100, Math.round(bar(s) * 100)) + '%"></i></div>' : '';
      return '<div class="card" data-field="' + name + '">' + name + '<b class="' + cls + '">' + v(s) + '</b>' + b + '</div>';
    }).join('');
    const flows = Array.isArray(s.flows) ? s.flows : [];
    const table = document.getElementById('flows');
    table.hidden = flows.length === 0;
    table.tBodies[0].replaceChildren(...flows.map((f) => {
      const tr = document.createElement('tr');
      for (const v of [f.flow, f.inflight, f.queued, f.shed]) { const td = document.createElement('td'); td.textContent = String(v); tr.append(td); }
      return tr;
    }));
    hist.push({ limit: s.limit, inflight: s.inflight, queued: s.queued, shed: lastShed === null ? 0 : Math.max(0, s.shed - lastShed) });
    lastShed = s.shed;
    if (hist.length > N) hist.shift();
    draw();
    document.getElementById('err').textContent = '';
  } catch (e) { document.getElementById('err').textContent = 'lost contact: ' + e.message; }
}
tick(); setInterval(tick, 1000);
</script></body></html>
`

export function statusPage (): string { return PAGE }
