// `doorman demo --short`: runs the whole demo with real processes, then checks its machine-readable results (not
// its wording) and opens its report in headless Chromium.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { CLI, spawnNode } from './helpers/index.js'
import { launchBrowser } from './helpers/browser.js'
import type { Results } from '../tools/src/demo/results.js'

// The whole demo runs in this one file: its budget (below) and the report's check, not .taprc's two minutes per file,
// bound it.
t.setTimeout(390_000)

t.test('doorman demo --short', async (t) => {
  t.saveFixture = true
  const dir = t.testdir({})
  const out = path.join(dir, 'report')
  const started = Date.now()
  const demo = spawnNode(t, [CLI, 'demo', '--short', '--out', out])
  const { code } = await demo.exited
  const took = Date.now() - started
  t.equal(code, 0, 'the demo exits 0 when its verdict holds', { output: demo.output().slice(-3000) })
  // The full demo's three-minute budget, plus one minute for the dependency-hang scenario and one for the gRPC rollout,
  // and half a minute for the noisy neighbour.
  t.ok(took < 330_000, `short mode runs within the full demo's budget (${took} ms)`)

  const results = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as Results
  t.equal(results.mode, 'short')
  t.equal(results.verdict.pass, true, 'the verdict passes', { checks: results.verdict.checks })

  t.test('incident', async (t) => {
    const inc = results.incident
    if (inc === null) { t.fail('no incident results'); return }
    const { without, with: withD, plan } = inc
    t.ok(without.restarts > 0, `without doorman kubelet restarts busy pods (${without.restarts})`)
    t.equal(withD.restarts, 0, 'with doorman nothing is restarted')
    t.ok(without.probe.failures > 0, 'without doorman liveness probes fail')
    t.equal(withD.probe.failures, 0, 'with doorman no liveness probe fails')
    t.ok(withD.probe.maxMs < plan.probe.timeoutMs / 2, `with doorman probes answer well inside the timeout (${withD.probe.maxMs} ms)`)
    t.equal(without.maxBusy, plan.workers, "without doorman the app's worker pool fills up")
    t.ok(withD.maxBusy <= plan.limit, `with doorman the app never has more than the limit busy (${withD.maxBusy} <= ${plan.limit})`)
    t.ok(withD.totals.shed > 0, 'with doorman the excess is shed')
    t.ok(withD.totals.failed < without.totals.failed, `fewer failed requests with doorman (${withD.totals.failed} vs ${without.totals.failed})`)
    t.ok(without.zeroReadySeconds >= withD.zeroReadySeconds, 'doorman never leaves fewer pods ready')
    for (const run of [without, withD]) {
      const { sent, ok, shed, failed } = run.totals
      t.equal(ok + shed + failed, sent, 'every request sent has an outcome')
      t.ok(run.timeline.length >= plan.endMs / plan.sampleMs - 1, 'a sample every interval')
      const sampled = run.timeline.reduce((n, s) => n + s.sent, 0)
      t.equal(sampled, sent, 'the timeline accounts for every request sent')
      t.equal(run.timeline[run.timeline.length - 1]?.restarts, run.restarts, 'the timeline ends at the run\'s restart count')
      t.equal(run.markers.filter((m) => m.kind === 'restart').length, run.restarts, 'one restart marker per restart')
    }
  })

  t.test('a dependency hangs', async (t) => {
    const h = results.hang
    if (h === null || h === undefined) { t.fail('no hang results'); return }
    const { without, with: withD, plan } = h
    t.same(Object.values(without.restartsByPod).map((n) => n > 0), Array.from({ length: plan.pods }, () => true), `without doorman every pod is restarted (${JSON.stringify(without.restartsByPod)})`)
    t.equal(withD.restarts, 0, 'with doorman none is')
    t.equal(withD.probe.failures, 0, "with doorman kubelet sees no app liveness probe fail")
    t.ok((withD.livenessWaived ?? 0) > 0, `...though the app's own check failed: the restart budget answered ${withD.livenessWaived} of them 200 as shared`)
    t.ok(withD.totals.shed > 0, 'with doorman the excess is shed')
    t.equal(withD.totals.kinds['no-endpoint'] ?? 0, 0, 'with doorman the pods stay ready')
    t.ok(withD.totals.failed < without.totals.failed, `fewer failed requests with doorman (${withD.totals.failed} vs ${without.totals.failed})`)
    const last = withD.timeline[withD.timeline.length - 1]
    t.equal(last?.readyPods, plan.pods, 'every pod ready at the end')
    t.ok((last?.ok ?? 0) > 0, 'requests succeed again at the end')
    const checks = results.verdict.checks.filter((c) => c.name.startsWith('dependency hang'))
    t.equal(checks.length, 4, 'four verdict lines for the hang')
    t.ok(checks.every((c) => c.pass), 'all pass')
    for (const run of [without, withD]) {
      const { sent, ok, shed, failed } = run.totals
      t.equal(ok + shed + failed, sent, 'every request sent has an outcome')
      t.equal(run.markers.filter((m) => m.kind === 'restart').length, run.restarts, 'one restart marker per restart')
    }
  })

  t.test('rollout', async (t) => {
    const r = results.rollout
    if (r === null) { t.fail('no rollout results'); return }
    const { run, plan } = r
    t.equal(run.skipped, null, 'the rollout ran')
    t.equal(run.totals.failed, 0, 'no request failed during the rollout', { kinds: run.totals.kinds })
    t.equal(run.totals.ok + run.totals.shed + run.totals.failed, run.totals.sent, 'every request sent has an outcome')
    t.ok(run.totals.ok > 0.95 * run.totals.sent, `nearly every request was served (${run.totals.ok} of ${run.totals.sent})`)
    t.equal(run.replaced.length, plan.instances, 'every instance was replaced')
    const fresh = run.replaced.map((x) => x.new)
    const last = run.timeline[run.timeline.length - 1]
    t.same(Object.keys(last?.weights ?? {}).sort(), [...fresh].sort(), 'only the new instances are left at the end')
    const fair = 100 / plan.instances
    for (const name of fresh) {
      const rise = run.shareRise[name] ?? []
      t.ok(rise.length >= 2, `${name}: shares measured over its warmup (${rise.join(', ')})`)
      const first = rise[0] ?? 100
      t.ok(first < fair, `${name} starts below its fair share (${first}% < ${fair.toFixed(1)}%)`)
      t.ok(Math.max(...rise.slice(1)) > first, `${name}'s share rises`)
    }
    for (const x of run.replaced) t.ok(x.drainDoneT >= x.drainStartedT, `${x.old} drained before it stopped`)
  })

  t.test('gRPC rollout', async (t) => {
    const g = results.grpc
    if (g === null || g === undefined) { t.fail('no gRPC results'); return }
    const { run, plan } = g
    t.equal(run.skipped, null, 'the gRPC rollout ran')
    t.equal(run.totals.failed, 0, 'no call failed during the rollout', { kinds: run.totals.kinds })
    t.equal(run.totals.ok + run.totals.shed + run.totals.failed, run.totals.sent, 'every call sent has an outcome')
    t.ok(run.totals.ok > 0.95 * run.totals.sent, `nearly every call was answered OK (${run.totals.ok} of ${run.totals.sent})`)
    t.equal(run.timeline.reduce((n, s) => n + s.sent, 0), run.totals.sent, 'the timeline accounts for every call sent')
    t.equal(run.replaced.length, plan.providers, 'every provider was replaced')
    const served: Record<string, number> = {}
    for (const s of run.timeline) for (const [n, c] of Object.entries(s.byInstance)) served[n] = (served[n] ?? 0) + c
    t.same(Object.keys(served).sort(), [...run.instances].sort(), `every provider answered calls of the one channel (${JSON.stringify(served)})`)
    t.same(Object.keys(run.timeline[run.timeline.length - 1]?.weights ?? {}).sort(), run.replaced.map((x) => x.new).sort(), 'only the new providers are left at the end')
    const checks = results.verdict.checks.filter((c) => c.name.startsWith('gRPC rollout'))
    t.same(checks.map((c) => c.name), ['gRPC rollout: failed calls', 'gRPC rollout: providers replaced', 'gRPC rollout: calls spread per call over the providers'], 'three verdict lines for the gRPC rollout')
    t.ok(checks.every((c) => c.pass), 'all pass', { checks })
  })

  t.test('noisy neighbour', async (t) => {
    const n = results.noisy
    if (n === null || n === undefined) { t.fail('no noisy-neighbour results'); return }
    t.ok(n.without.shopDuringFlood.shed > 0, `with DOORMAN_FAIRNESS=off the shop is shed while the batch job floods (${n.without.shopDuringFlood.shed})`)
    t.ok(n.with.shopDuringFlood.ok >= 0.95 * n.with.shopDuringFlood.sent, `with fairness the shop is served (${n.with.shopDuringFlood.ok} of ${n.with.shopDuringFlood.sent})`)
    t.ok(n.with.batch.shed > 0, 'and the batch job is shed')
    t.equal(n.with.flows[0]?.flow, 'h:batch-job', "/state named the batch job as the heaviest flow")
  })

  t.test('the report in headless Chromium', async (t) => {
    const browser = await launchBrowser(t)
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } })
    const errors: string[] = []
    page.on('pageerror', (err) => { errors.push(err.message) })
    // Nothing may be fetched: the report is one self-contained file.
    const fetched: string[] = []
    page.on('request', (req) => { if (!req.url().startsWith('file:')) fetched.push(req.url()) })
    await page.goto('file://' + path.join(out, 'index.html'))
    t.equal(await page.locator('#verdict').getAttribute('data-pass'), 'true', 'the verdict banner shows a pass')
    const charts = await page.locator('svg.chart').evaluateAll((svgs) => svgs.map((svg) => {
      const box = svg.getBoundingClientRect()
      const marks = [...svg.querySelectorAll('path.series, g.layer rect, g.series circle')]
      return {
        id: svg.id,
        width: box.width,
        height: box.height,
        marks: marks.length,
        // A drawn mark has a real size on screen.
        drawn: marks.filter((m) => { const b = (m as SVGGraphicsElement).getBBox(); return b.width > 0 || b.height > 0 }).length
      }
    }))
    const ids = charts.map((c) => c.id)
    for (const id of ['incident-without-requests', 'incident-with-requests', 'incident-without-workers', 'incident-with-workers', 'incident-without-probe', 'incident-with-probe', 'incident-without-ready', 'incident-with-ready', 'hang-without-requests', 'hang-with-requests', 'hang-without-ready', 'hang-with-ready', 'rollout-share', 'rollout-requests', 'rollout-weights', 'grpc-share', 'grpc-requests', 'grpc-weights', 'noisy-off', 'noisy-flow']) {
      t.ok(ids.includes(id), `chart ${id} is in the report`)
    }
    for (const c of charts) {
      t.ok(c.width > 200 && c.height > 100, `${c.id} is laid out (${Math.round(c.width)}×${Math.round(c.height)})`)
      t.ok(c.drawn > 0, `${c.id} has data drawn (${c.drawn} of ${c.marks} marks)`)
    }
    const restarts = await page.locator('#incident-without-ready g.marker').count()
    t.equal(restarts, results.incident?.without.restarts, 'one restart marker per restart on the chart')
    t.equal(await page.locator('#hang-without-ready g.marker').count(), results.hang?.without.restarts, 'and on the hang\'s chart')
    t.same(errors, [], 'no script errors')
    t.same(fetched, [], 'nothing fetched from anywhere')
    const shot = path.join(dir, 'report.png')
    await page.screenshot({ path: shot, fullPage: true })
    t.ok(fs.statSync(shot).size > 10_000, `screenshot saved: ${shot}`)
  })
})
