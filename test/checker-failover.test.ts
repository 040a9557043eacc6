// Checker failover with real processes: `doorman checker` replicas over a private redis-server, and six instances
// that are small HTTP apps in their own processes (so SIGSTOP freezes them), registered by the test for as long as it
// needs them. Replicas are killed with SIGKILL one after another, each time the older of two, so that each in turn
// is the only one left, is joined by a new one, and is killed next. Before each death the six instances are
// registered under a service the victim owns; after it, three of them are frozen: the survivor must take the
// service over and eject two (the protection threshold: 34% of six) within the bound — DOORMAN_REGISTRY_TTL +
// failures × interval + one interval after the kill — and never the third; thawed, all three are recovered. The
// probe timeout is the default (1 s, longer than the 500 ms interval).
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type RedisTarget, type Watch } from '../src/registry/index.js'
import { owner } from '../src/checker/index.js'
import { startFixtureApp, waitFor, type Child } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'
import { checkerState, instance, metric, rounds, startChecker, type CheckerProc } from './checker-helpers.js'

const TTL = 2000
const INTERVAL = 500
const FAILURES = 2
const BOUND = TTL + FAILURES * INTERVAL + INTERVAL

/** The first name `prefix-N` that rendezvous hashing gives to `want` among `replicas`. */
function serviceOwnedBy (prefix: string, want: string, replicas: string[]): string {
  for (let i = 0; ; i++) if (owner(`${prefix}-${i}`, replicas) === want) return `${prefix}-${i}`
}

t.test('a dead replica\'s share is taken over within the bound, death after death, and the threshold holds', async (t) => {
  const redis = await startRedis(t)
  const registry = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await registry.close() })
  t.ok(await registry.waitUp(5000))
  const apps: Array<Child & { port: number }> = await Promise.all(Array.from({ length: 6 }, async () => await startFixtureApp(t, 'probe-app.mjs')))
  const freeze = (i: number): void => { process.kill(apps[i].proc.pid as number, 'SIGSTOP') }
  const thaw = (i: number): void => { process.kill(apps[i].proc.pid as number, 'SIGCONT') }

  const env = {
    DOORMAN_REGISTRY: redis.url,
    DOORMAN_REGISTRY_TTL: `${TTL}ms`,
    DOORMAN_CHECK_INTERVAL: `${INTERVAL}ms`,
    DOORMAN_CHECK_TIMEOUT: '1s',
    DOORMAN_CHECK_FAILURES: String(FAILURES),
    DOORMAN_CHECK_SUCCESSES: '2'
    // DOORMAN_CHECK_MAX_EJECT at its default (33%): 2 of 6.
  }
  // Live replicas, oldest first.
  const live: Array<{ id: string, proc: CheckerProc }> = []
  let next = 1
  const join = async (): Promise<void> => {
    const id = `r${next++}`
    live.push({ id, proc: await startChecker(t, { ...env, DOORMAN_CHECK_REPLICA_ID: id }) })
    const all = live.map((r) => r.id).sort().join()
    await waitFor(`every replica sees ${all}`, async () => {
      for (const r of live) if ((await checkerState(r.proc.admin)).replicas.join() !== all) return false
      return true
    }, 15_000)
  }
  await join()
  await join()

  const measured: number[] = []
  for (let death = 1; death <= 3; death++) {
    const [victim, survivor] = live
    const service = serviceOwnedBy(`svc${death}`, victim.id, live.map((r) => r.id))
    const ids = apps.map((_, i) => `${service}-${i}`)
    // Probed over HTTP on the app's own port (adminPort): a frozen process answers nothing.
    for (const [i, a] of apps.entries()) await registry.register(instance(service, ids[i], a.port, a.port), 600_000)
    // The test's own watch: when each ejection and recovery reaches a consumer.
    const ejectedAt = new Map<string, number>()
    const watch: Watch = registry.watch(service, (_view, change) => {
      if (change.type === 'put' && change.instance.ejected && change.previous?.ejected !== true) ejectedAt.set(change.instance.id, performance.now())
    })
    await watch.ready
    const ejected = (): string[] => [...watch.view.values()].filter((i) => i.ejected).map((i) => i.id).sort()
    await waitFor(`${victim.id} alone checks ${service}`, async () =>
      (await checkerState(victim.proc.admin)).services.includes(service) && !(await checkerState(survivor.proc.admin)).services.includes(service), 10_000)
    const frozen = [0, 1, 2].map((k) => (death * 2 + k) % 6)
    // The last time, one of them is frozen and ejected by the victim before it dies: the ejection outlives its
    // maker, counts against the threshold, and is released by the new owner.
    const early = death === 3 ? frozen.slice(0, 1) : []
    for (const i of early) freeze(i)
    if (early.length > 0) await waitFor(`${victim.id} ejects ${ids[early[0]]}`, () => ejected().includes(ids[early[0]]), 10_000)

    victim.proc.kill('SIGKILL')
    await victim.proc.exited
    const killedAt = performance.now()
    live.shift()
    for (const i of frozen) if (!early.includes(i)) freeze(i)
    await waitFor(`${survivor.id} takes ${service} over`, async () => (await checkerState(survivor.proc.admin)).services.includes(service), BOUND + 10_000)
    const tookOver = performance.now() - killedAt
    await waitFor(`two of three frozen instances of ${service} ejected`, () => ejected().length === 2, BOUND + 10_000)
    const last = Math.max(...ejected().map((id) => ejectedAt.get(id) ?? killedAt)) - killedAt
    measured.push(last)
    t.comment(`death ${death}: ${victim.id} killed, ${survivor.id} alone; took ${service} over after ${Math.round(tookOver)} ms, ` +
      `${ejected().join(' and ')} ejected by ${Math.round(last)} ms (bound ${BOUND} ms)`)
    t.ok(last <= BOUND, `death ${death}: ejected within ${BOUND} ms of the kill (${Math.round(last)} ms)`)
    t.ok(ejected().every((id) => frozen.map((i) => ids[i]).includes(id)), 'only frozen instances ejected')
    t.same((await checkerState(survivor.proc.admin)).replicas, [survivor.id], 'the dead replica left the ring')
    // The threshold holds over the next rounds: the third frozen instance stays in.
    await rounds(survivor.proc.admin, 3)
    t.equal(ejected().length, 2, `death ${death}: exactly two of six ejected with three frozen`)
    t.ok(await metric(survivor.proc.admin, 'doorman_checker_ejections_blocked_total', 'reason="threshold"') > 0, 'the third was held in by the threshold')
    for (const i of frozen) thaw(i)
    await waitFor(`every thawed instance of ${service} recovered`, () => ejected().length === 0, 15_000)
    // Done with this service: it leaves the registry, and the survivor's shard.
    watch.close()
    for (const id of ids) await registry.deregister(service, id)
    await join()
  }
  t.comment(`ejections after each kill: ${measured.map((m) => `${Math.round(m)} ms`).join(', ')} (bound ${BOUND} ms)`)
})
