// The lane's live status page (GET /): one self-contained HTML document that polls /state.

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>doorman status</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#1b1f24;background:#fafbfc}
h1{font-size:1.3rem;margin:0 0 1rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.75rem;max-width:900px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.6rem .8rem}
.card b{display:block;font-size:1.4rem}
.ok{color:#1a7f37}.bad{color:#cf222e}
.bar{height:8px;background:#eaeef2;border-radius:4px;overflow:hidden;margin-top:.3rem}
.bar i{display:block;height:100%;background:#0969da}
#err{color:#cf222e}
</style></head><body>
<h1>doorman <span id="svc"></span></h1>
<div class="grid" id="grid"></div>
<p id="err"></p>
<script>
const fields = [
  ['phase', s => s.phase], ['ready', s => s.ready ? 'yes' : 'no', s => s.ready],
  ['limit', s => s.limit], ['in flight', s => s.inflight, null, s => s.limit ? s.inflight / s.limit : 0],
  ['queued', s => s.queued], ['shed', s => s.shed], ['completed', s => s.completed], ['failed', s => s.failed],
  ['warmup', s => Math.round(s.warmup.progress * 100) + '%', null, s => s.warmup.progress],
  ['weight', s => s.warmup.weight + '%'],
  ['registered', s => s.registration.required ? (s.registration.registered ? 'yes' : 'no') : 'n/a', s => !s.registration.required || s.registration.registered],
  ['app ready', s => s.app.ready ? 'yes' : 'no', s => s.app.ready],
  ['main loop', s => s.mainLoop.heartbeatAgeMs + ' ms']
];
async function tick () {
  try {
    const s = await (await fetch('/state', { cache: 'no-store' })).json();
    document.getElementById('svc').textContent = s.service ? '· ' + s.service : '';
    document.getElementById('grid').innerHTML = fields.map(([name, v, ok, bar]) => {
      const cls = ok ? (ok(s) ? 'ok' : 'bad') : '';
      const b = bar ? '<div class="bar"><i style="width:' + Math.min(100, Math.round(bar(s) * 100)) + '%"></i></div>' : '';
      return '<div class="card" data-field="' + name + '">' + name + '<b class="' + cls + '">' + v(s) + '</b>' + b + '</div>';
    }).join('');
    document.getElementById('err').textContent = '';
  } catch (e) { document.getElementById('err').textContent = 'lost contact: ' + e.message; }
}
tick(); setInterval(tick, 1000);
</script></body></html>
`

export function statusPage (): string { return PAGE }
