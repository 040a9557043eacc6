// The alert rules (deploy/monitoring/prometheus-rule.yaml, and the chart's copy) through Prometheus' own promtool:
// `promtool check rules` on both, and `promtool test rules` on the alerts issues 16 and 25 added, with series shaped like
// doorman's (Debian's `prometheus` package carries promtool; scripts/test-deps.mjs installs it).
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parse, stringify } from 'yaml'
import { ROOT } from './helpers/index.js'

const dir = mkdtempSync(path.join(tmpdir(), 'doorman-alerts-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
const chartRules = path.join(ROOT, 'charts/doorman/files/prometheus-rules.yaml')

function promtool (...args: string[]): string {
  try {
    return execFileSync('promtool', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (err) {
    const e = err as { stdout?: string, stderr?: string }
    throw new Error(`promtool ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`)
  }
}

t.test('promtool check rules passes on both copies', async (t) => {
  t.match(promtool('check', 'rules', chartRules), /SUCCESS: \d+ rules found/)
  const docs = readFileSync(path.join(ROOT, 'deploy/monitoring/prometheus-rule.yaml'), 'utf8')
  const spec = (parse(docs) as { spec: unknown }).spec
  writeFileSync(path.join(dir, 'deploy-rules.yaml'), stringify(spec))
  t.match(promtool('check', 'rules', 'deploy-rules.yaml'), /SUCCESS: \d+ rules found/)
})

t.test('the checker, liveness-budget and panic alerts fire on the series that mean them', async (t) => {
  // The conditions are under test, not the wording: annotations dropped (promtool compares them exactly otherwise).
  const rules = parse(readFileSync(chartRules, 'utf8')) as { groups: Array<{ rules: Array<{ annotations?: unknown }> }> }
  for (const g of rules.groups) for (const r of g.rules) delete r.annotations
  writeFileSync(path.join(dir, 'rules.yaml'), stringify(rules))
  const tests = {
    rule_files: ['rules.yaml'],
    evaluation_interval: '1m',
    tests: [
      {
        interval: '1m',
        input_series: [
          // The checker: 2 blocked ejections a minute; rounds of ~5 s.
          { series: 'doorman_checker_ejections_blocked_total{namespace="ops",pod="checker-0",reason="threshold"}', values: '0+2x30' },
          { series: 'doorman_checker_round_duration_seconds_bucket{namespace="ops",pod="checker-0",le="3"}', values: '0x30' },
          { series: 'doorman_checker_round_duration_seconds_bucket{namespace="ops",pod="checker-0",le="5"}', values: '0+12x30' },
          { series: 'doorman_checker_round_duration_seconds_bucket{namespace="ops",pod="checker-0",le="+Inf"}', values: '0+12x30' },
          // Service orders: 3 instances, budget 1; all three failing (a hung dependency).
          ...['a', 'b', 'c'].flatMap((pod) => [
            { series: `doorman_liveness_service_failing{namespace="shop",pod="${pod}",service="orders"}`, values: '3x30' },
            { series: `doorman_liveness_budget{namespace="shop",pod="${pod}",service="orders"}`, values: '1x30' }
          ]),
          // Service pay: 1 of 4 restarting, budget 1: spent, not shared.
          { series: 'doorman_liveness_service_failing{namespace="shop",pod="p",service="pay"}', values: '1x30' },
          { series: 'doorman_liveness_budget{namespace="shop",pod="p",service="pay"}', values: '1x30' },
          // Service cart: nothing failing.
          { series: 'doorman_liveness_service_failing{namespace="shop",pod="q",service="cart"}', values: '0x30' },
          { series: 'doorman_liveness_budget{namespace="shop",pod="q",service="cart"}', values: '1x30' },
          { series: 'doorman_outbound_panic{namespace="shop",pod="web-0",service="orders"}', values: '1x30' },
          // mTLS: cart-0's certificate was not renewed (an hour's, counting down to 0 and past it); cart-1's was.
          { series: 'doorman_tls_cert_expiry_seconds{namespace="shop",pod="cart-0"}', values: '1500-60x30' },
          { series: 'doorman_tls_cert_ready{namespace="shop",pod="cart-0"}', values: '1x25 0x5' },
          { series: 'doorman_tls_cert_expiry_seconds{namespace="shop",pod="cart-1"}', values: '1500-60x10 3600-60x20' },
          { series: 'doorman_tls_cert_ready{namespace="shop",pod="cart-1"}', values: '1x30' },
          // Retries to orders held back by the budget on two callers for the whole run; to pay, once only.
          { series: 'doorman_outbound_retry_budget_exhausted_total{namespace="shop",pod="web-0",service="orders"}', values: '0+30x30' },
          { series: 'doorman_outbound_retry_budget_exhausted_total{namespace="shop",pod="web-1",service="orders"}', values: '0+5x30' },
          { series: 'doorman_outbound_retry_budget_exhausted_total{namespace="shop",pod="web-0",service="pay"}', values: '0 3x29' }
        ],
        alert_rule_test: [
          { eval_time: '20m', alertname: 'DoormanCheckerEjectionsBlocked', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'ops', pod: 'checker-0' } }] },
          { eval_time: '20m', alertname: 'DoormanCheckerRoundSlow', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'ops', pod: 'checker-0' } }] },
          {
            eval_time: '10m',
            alertname: 'DoormanLivenessBudgetSpent',
            exp_alerts: [
              { exp_labels: { severity: 'warning', namespace: 'shop', service: 'orders' } },
              { exp_labels: { severity: 'warning', namespace: 'shop', service: 'pay' } }
            ]
          },
          { eval_time: '10m', alertname: 'DoormanLivenessFailureShared', exp_alerts: [{ exp_labels: { severity: 'critical', namespace: 'shop', service: 'orders' } }] },
          { eval_time: '10m', alertname: 'DoormanOutboundPanic', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'shop', service: 'orders' } }] },
          { eval_time: '10m', alertname: 'DoormanCertificateExpiring', exp_alerts: [] },
          { eval_time: '20m', alertname: 'DoormanCertificateExpiring', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'shop', pod: 'cart-0' } }] },
          { eval_time: '20m', alertname: 'DoormanCertificateUnusable', exp_alerts: [] },
          { eval_time: '29m', alertname: 'DoormanCertificateUnusable', exp_alerts: [{ exp_labels: { severity: 'critical', namespace: 'shop', pod: 'cart-0' } }] },
          { eval_time: '8m', alertname: 'DoormanRetryBudgetExhausted', exp_alerts: [] },
          { eval_time: '20m', alertname: 'DoormanRetryBudgetExhausted', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'shop', service: 'orders' } }] }
        ]
      }
    ]
  }
  writeFileSync(path.join(dir, 'tests.yaml'), stringify(tests))
  t.match(promtool('test', 'rules', 'tests.yaml'), /SUCCESS/)
})

t.test('issue 26\'s checker alerts: registry down, a replica lost, a scope out of full, ejections spiking', async (t) => {
  const rules = parse(readFileSync(chartRules, 'utf8')) as { groups: Array<{ rules: Array<{ annotations?: unknown }> }> }
  for (const g of rules.groups) for (const r of g.rules) delete r.annotations
  writeFileSync(path.join(dir, 'rules26.yaml'), stringify(rules))
  const tests = {
    rule_files: ['rules26.yaml'],
    evaluation_interval: '1m',
    tests: [
      {
        interval: '1m',
        input_series: [
          // The registry lost after 5 minutes.
          { series: 'doorman_checker_registry_up{namespace="ops",pod="checker-0"}', values: '1x5 0x30' },
          { series: 'doorman_checker_registry_up{namespace="ops",pod="checker-1"}', values: '1x35' },
          // Two replicas, then checker-1 gone after 10 minutes.
          { series: 'doorman_checker_replicas{namespace="ops",pod="checker-0"}', values: '2x10 1x25' },
          { series: 'doorman_checker_replicas{namespace="ops",pod="checker-1"}', values: '2x10' },
          // Ejections: none for an hour, then 10 a minute.
          { series: 'doorman_checker_ejections_total{namespace="ops",pod="checker-0"}', values: '0x60 0+10x10' }
        ],
        alert_rule_test: [
          { eval_time: '4m', alertname: 'DoormanCheckerRegistryDown', exp_alerts: [] },
          { eval_time: '10m', alertname: 'DoormanCheckerRegistryDown', exp_alerts: [{ exp_labels: { severity: 'critical', namespace: 'ops', pod: 'checker-0' } }] },
          { eval_time: '9m', alertname: 'DoormanCheckerReplicaLost', exp_alerts: [] },
          // A gone pod's last sample counts for Prometheus' 5-minute lookback; then 2 minutes of `for`.
          { eval_time: '20m', alertname: 'DoormanCheckerReplicaLost', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'ops' } }] },
          { eval_time: '50m', alertname: 'DoormanCheckerEjectionsSpiking', exp_alerts: [] },
          { eval_time: '65m', alertname: 'DoormanCheckerEjectionsSpiking', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'ops' } }] }
        ]
      },
      {
        interval: '1m',
        input_series: [
          // org:finance switched off for seven hours; the global entry stays full.
          { series: 'doorman_checker_mode_entry{namespace="ops",pod="checker-0",scope="org:finance",mode="off"}', values: '1x420' },
          { series: 'doorman_checker_mode_entry{namespace="ops",pod="checker-0",scope="*",mode="full"}', values: '1x420' }
        ],
        alert_rule_test: [
          { eval_time: '5h', alertname: 'DoormanCheckerScopeDegraded', exp_alerts: [] },
          { eval_time: '6h30m', alertname: 'DoormanCheckerScopeDegraded', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'ops', scope: 'org:finance', mode: 'off' } }] }
        ]
      }
    ]
  }
  writeFileSync(path.join(dir, 'tests26.yaml'), stringify(tests))
  t.match(promtool('test', 'rules', 'tests26.yaml'), /SUCCESS/)
})
