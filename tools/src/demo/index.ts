// `doorman demo`: the seed incident replayed with real processes on loopback, without and with doorman, then a
// rollout under load; live progress in the terminal, then a verdict, an HTML report and results.json.
import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { version } from '../../../dist/core/version.js'
import { HANG_FULL, HANG_SHORT, INCIDENT_FULL, INCIDENT_SHORT, runIncident } from './incident.js'
import { GRPC_FULL, GRPC_SHORT, runGrpcRollout } from './grpc-rollout.js'
import { ROLLOUT_FULL, ROLLOUT_SHORT, runRollout } from './rollout.js'
import { MTLS_FULL, MTLS_SHORT, runMtls } from './mtls.js'
import { NOISY_FULL, NOISY_SHORT, runNoisy } from './noisy.js'
import { renderReport } from './report.js'
import { verdict, type Results } from './results.js'
import { Live } from './terminal.js'
import { Interrupted } from './time.js'

const USAGE = `usage: doorman demo [--short] [--out DIR] [--only incident|hang|rollout|grpc|mtls|noisy] [--plain]

  --short        a quicker run (about a minute) with the same story, for tests and CI
  --out DIR      where to write index.html, results.json and logs/ (default ./doorman-demo-report)
  --only NAME    run one scenario: incident, hang (a dependency hangs), rollout, grpc (a gRPC rollout), mtls (mTLS
                 between sidecars) or noisy (one caller floods, another goes on being served)
  --plain        plain progress lines even on a terminal
`

export async function command (args: string[]): Promise<number> {
  let values
  try {
    values = parseArgs({
      args,
      options: {
        short: { type: 'boolean', default: false },
        quick: { type: 'boolean', default: false },
        out: { type: 'string', default: 'doorman-demo-report' },
        only: { type: 'string' },
        plain: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false }
      },
      strict: true
    }).values
  } catch (err) {
    process.stderr.write(`doorman demo: ${(err as Error).message}\n\n${USAGE}`)
    return 1
  }
  if (values.help) { process.stdout.write(USAGE); return 0 }
  if (values.only !== undefined && !['incident', 'hang', 'rollout', 'grpc', 'mtls', 'noisy'].includes(values.only)) {
    process.stderr.write(`doorman demo: --only takes incident, hang, rollout, grpc, mtls or noisy, got ${JSON.stringify(values.only)}\n`)
    return 1
  }
  const short = values.short || values.quick
  const out = path.resolve(values.out)
  const logDir = path.join(out, 'logs')
  fs.rmSync(logDir, { recursive: true, force: true })
  fs.mkdirSync(logDir, { recursive: true })

  const live = new Live(process.stdout, values.plain ? { tty: false } : {})
  const s = live.s
  const abort = new AbortController()
  const onSignal = (): void => { abort.abort() }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  const started = Date.now()
  const incidentPlan = short ? INCIDENT_SHORT : INCIDENT_FULL
  const rolloutPlan = short ? ROLLOUT_SHORT : ROLLOUT_FULL
  const hangPlan = short ? HANG_SHORT : HANG_FULL
  const grpcPlan = short ? GRPC_SHORT : GRPC_FULL
  const partial: Omit<Results, 'verdict'> = { version, mode: short ? 'short' : 'full', startedAt: new Date(started).toISOString(), durationMs: 0, incident: null, rollout: null, hang: null, grpc: null, mtls: null }
  const runs = (name: string): boolean => values.only === undefined || values.only === name
  live.line(s.bold('doorman demo') + s.dim(` — seed 001 replayed with real processes on loopback (${partial.mode} mode; logs in ${path.relative(process.cwd(), logDir) || logDir})`))
  try {
    if (runs('incident')) {
      live.stage(`1/8  incident without doorman: kubelet probes the app's /health, which needs a worker like any request`)
      const without = await runIncident({ withDoorman: false, plan: incidentPlan, logDir, signal: abort.signal, onSample: (x, p) => { live.incident(x, p) } })
      live.done(`  → ${without.restarts > 0 ? s.red(`${without.restarts} restart(s)`) : '0 restarts'}, ${without.totals.failed} failed of ${without.totals.sent} requests`)
      live.stage(`2/8  incident with doorman: limit ${incidentPlan.limit} below the pool of ${incidentPlan.workers}, probes on doorman's lane`)
      const withD = await runIncident({ withDoorman: true, plan: incidentPlan, logDir, signal: abort.signal, onSample: (x, p) => { live.incident(x, p) } })
      live.done(`  → ${withD.restarts === 0 ? s.green('0 restarts') : s.red(`${withD.restarts} restart(s)`)}, ${withD.totals.failed} failed, ${withD.totals.shed} shed of ${withD.totals.sent} requests`)
      partial.incident = { plan: incidentPlan, without, with: withD }
    }
    if (runs('hang')) {
      const hangS = (hangPlan.recoverAtMs - hangPlan.slowAtMs) / 1000
      live.stage(`3/8  a dependency hangs for ${hangS} s, without doorman: kubelet probes the app's own progress-style /health/live`)
      const without = await runIncident({ withDoorman: false, plan: hangPlan, logDir, signal: abort.signal, onSample: (x, p) => { live.incident(x, p) } })
      live.done(`  → ${without.restarts > 0 ? s.red(`${without.restarts} restart(s)`) : '0 restarts'} over ${Object.values(without.restartsByPod).filter((n) => n > 0).length} of ${hangPlan.pods} pods, ${without.totals.failed} failed of ${without.totals.sent} requests`)
      live.stage(`4/8  the same hang with doorman: the app's probe on the lane, the restart budget over a shared registry`)
      const withD = await runIncident({ withDoorman: true, plan: hangPlan, logDir, signal: abort.signal, onSample: (x, p) => { live.incident(x, p) } })
      live.done(`  → ${withD.restarts === 0 ? s.green('0 restarts') : s.red(`${withD.restarts} restart(s)`)}, ${withD.totals.failed} failed, ${withD.totals.shed} shed of ${withD.totals.sent} requests`)
      partial.hang = { plan: hangPlan, without, with: withD }
    }
    if (runs('rollout')) {
      live.stage(`5/8  rollout: ${rolloutPlan.instances} instances behind a consumer doorman, drained and replaced in turn under load`)
      const run = await runRollout({ plan: rolloutPlan, logDir, signal: abort.signal, onSample: (x, p, note) => { live.rollout(x, p, note) } })
      live.done(run.skipped !== null ? `  → not run: ${run.skipped}` : `  → ${run.totals.failed === 0 ? s.green('0 failed') : s.red(`${run.totals.failed} failed`)} of ${run.totals.sent} requests, ${run.replaced.length} instances replaced`)
      partial.rollout = { plan: rolloutPlan, run }
    }
    if (runs('grpc')) {
      live.stage(`6/8  gRPC rollout: one grpc-js channel through the outbound lane, ${grpcPlan.providers} gRPC providers (h2c) replaced in turn`)
      const run = await runGrpcRollout({ plan: grpcPlan, logDir, signal: abort.signal, onSample: (x, p, note) => { live.rollout(x, p, note) } })
      live.done(run.skipped !== null ? `  → not run: ${run.skipped}` : `  → ${run.totals.failed === 0 ? s.green('0 failed') : s.red(`${run.totals.failed} failed`)} of ${run.totals.sent} calls, ${run.replaced.length} providers replaced`)
      partial.grpc = { plan: grpcPlan, run }
    }
    if (runs('mtls')) {
      const mtlsPlan = short ? MTLS_SHORT : MTLS_FULL
      live.stage('7/8  mTLS: a consumer calls a provider through both sidecars over mutual TLS (strict), a certificate rotated mid-run')
      const run = await runMtls({ plan: mtlsPlan, logDir, signal: abort.signal })
      live.done(run.skipped !== null ? `  → not run: ${run.skipped}` : `  → ${run.failed === 0 ? s.green('0 failed') : s.red(`${run.failed} failed`)} of ${run.sent} requests; plaintext ${run.refused.plaintext ? 'refused' : s.red('served')}, another CA ${run.refused.otherCa ? 'refused' : s.red('served')}`)
      partial.mtls = { plan: mtlsPlan, run }
    }
    if (runs('noisy')) {
      const plan = short ? NOISY_SHORT : NOISY_FULL
      live.stage(`8/8  noisy neighbour: a batch job floods at ${plan.batchRate} requests/s, the shop calls at ${plan.shopRate}/s, with DOORMAN_FAIRNESS=off then with fairness`)
      const without = await runNoisy({ plan, fairness: 'off', logDir, signal: abort.signal })
      const withF = await runNoisy({ plan, fairness: 'flow', logDir, signal: abort.signal })
      const d = (r: typeof without): string => `${r.shopDuringFlood.ok}/${r.shopDuringFlood.sent} of the shop's served during the flood, ${r.shopDuringFlood.shed} shed`
      live.done(`  → off: ${d(without)}; with fairness: ${withF.shopDuringFlood.shed === 0 ? s.green(d(withF)) : s.red(d(withF))}`)
      partial.noisy = { plan, without, with: withF }
    }
  } catch (err) {
    if (err instanceof Interrupted) { live.line('\ninterrupted: every process the demo started has been stopped'); return 130 }
    throw err
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
  partial.durationMs = Date.now() - started
  const results: Results = { ...partial, verdict: verdict(partial) }
  fs.writeFileSync(path.join(out, 'results.json'), JSON.stringify(results, null, 2) + '\n')
  const report = path.join(out, 'index.html')
  fs.writeFileSync(report, renderReport(results))
  live.verdict(results, report)
  return results.verdict.pass ? 0 : 1
}
