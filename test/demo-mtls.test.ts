// `doorman demo --only mtls --short`: the demo's mTLS part alone, with real processes — requests through two strict
// sidecars with none failed across a certificate rotation, the caller's SPIFFE ID at the provider's app, a plaintext
// caller and a caller from another CA refused — checked in its machine-readable results.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { CLI, spawnNode } from './helpers/index.js'
import type { Results } from '../src/demo/results.js'

t.test('doorman demo --only mtls --short', async (t) => {
  const out = path.join(t.testdir({}), 'report')
  const demo = spawnNode(t, [CLI, 'demo', '--only', 'mtls', '--short', '--plain', '--out', out])
  const { code } = await demo.exited
  t.equal(code, 0, 'the demo exits 0 when its verdict holds', { output: demo.output().slice(-3000) })
  const results = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as Results
  const run = results.mtls?.run
  if (run === undefined) { t.fail('no mTLS results'); return }
  t.equal(run.skipped, null)
  t.equal(run.failed, 0, `no failed request (${run.sent} sent)`)
  t.ok(run.ok > 50, `requests kept flowing (${run.ok})`)
  t.ok(run.rotation !== null && run.rotation.after !== '' && run.rotation.after !== run.rotation.before, 'the new certificate was presented after the swap')
  t.ok((run.rotation?.presentedAfterMs ?? Infinity) < 5000, `within seconds (${run.rotation?.presentedAfterMs} ms)`)
  t.match(run.xfcc, /^By=spiffe:\/\/demo\.local\/ns\/shop\/sa\/orders;Hash=[0-9a-f]{64};URI=spiffe:\/\/demo\.local\/ns\/shop\/sa\/frontend$/)
  t.same(run.refused, { plaintext: true, otherCa: true })
  t.same(results.verdict.checks.map((c) => [c.name, c.pass]), [
    ['failed requests over mTLS', true], ['new certificate in use', true], ["caller's identity at the app", true],
    ['plaintext caller refused', true], ['certificate from another CA refused', true]
  ])
  t.ok(fs.readFileSync(path.join(out, 'index.html'), 'utf8').includes('plaintext caller refused'), 'the report lists the checks')
})
