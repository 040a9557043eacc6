// The outbound section: the outbound lane's CPU per request (the app's call → doorman → one instance), against the
// same call direct and through http-proxy, with the service at 1 and at 1,000 registered instances; and the
// balancer's pick cost at 1,000 instances, in-process. The registry is a private redis-server.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Options, Section, Check } from './section.js'
import { Cell, Load, ROOT, startApp, startHttpProxy, startDoorman, freePort, until, cpuMicros, median, table, fmt } from './lib.js'

const CONNECTIONS = 50
const MANY = 1000

/** The part of the balancer this section drives (loaded from dist at run time). */
interface Endpointish { inflight: number, tier: (now: number) => number, weight: (now: number) => number, changing: (now: number) => boolean, tierChangesAt: (now: number) => number }
interface BalancerLike { set: (e: Endpointish[]) => void, pick: (now: number) => Endpointish | undefined }
interface RegistryLike { waitUp: (ms: number) => Promise<boolean>, register: (inst: Record<string, unknown>, ttl: number) => Promise<void>, close: () => Promise<void> }

async function dist<T> (file: string): Promise<T> {
  return await import(pathToFileURL(path.join(ROOT, 'dist', file)).href) as T
}

/** ns per pick over `n` picks, with `now` advancing 10 µs a pick (so warming weights are rebuilt every 100 ms). */
async function pickCost (endpoints: Endpointish[], n: number): Promise<number> {
  const { Balancer } = await dist<{ Balancer: new () => BalancerLike }>('outbound/balancer.js')
  const b = new Balancer()
  b.set(endpoints)
  let now = 0
  for (let i = 0; i < 10_000; i++) b.pick(now)
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) {
    now += 0.01
    const e = b.pick(now) as Endpointish
    e.inflight = (e.inflight + 1) & 7
  }
  return Number(process.hrtime.bigint() - t0) / n
}

function endpoints (count: number, warming: number): Endpointish[] {
  return Array.from({ length: count }, (_, i) => {
    const w = i < warming
    return { inflight: 0, tier: () => 0, weight: (now: number) => w ? Math.min(1, 0.1 + now / 1e7) : 1, changing: () => w, tierChangesAt: () => Infinity }
  })
}

async function startRedis (): Promise<{ url: string, stop: () => void }> {
  const port = await freePort()
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-bench-redis-'))
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' })
  const stop = (): void => { proc.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }) }
  process.once('exit', stop)
  return { url: `redis://127.0.0.1:${port}`, stop }
}

export const outboundSection: Section = {
  name: 'outbound',
  title: 'Outbound lane: CPU per request, and the balancer at 1,000 instances',
  async run (opts: Options): Promise<Check[]> {
    // The balancer alone.
    const picks = 1_000_000
    const equal = await pickCost(endpoints(MANY, 0), picks)
    const warming = await pickCost(endpoints(MANY, MANY / 10), picks)
    const small = await pickCost(endpoints(2, 0), picks)
    console.log(table(['balancer', 'instances', 'ns per pick'], [
      ['equal weights', '2', fmt(small)],
      ['equal weights', String(MANY), fmt(equal)],
      ['10 % warming (weights rebuilt every 100 ms)', String(MANY), fmt(warming)]
    ], 2))

    // The lane end to end.
    const redis = await startRedis()
    const app = await startApp()
    const baseline = await startHttpProxy(app.port)
    const { RedisRegistry, parseRegistryUrl } = await dist<{ RedisRegistry: new (o: { target: unknown }) => RegistryLike, parseRegistryUrl: (u: string) => unknown }>('registry/index.js')
    const reg = new RedisRegistry({ target: parseRegistryUrl(redis.url) })
    const outPort = await freePort()
    const doorman = await startDoorman(app.port, { DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'bench-caller', DOORMAN_OUTBOUND_PORT: String(outPort) })
    const load = new Load()
    const cells = new Map<string, Cell>()
    try {
      await reg.waitUp(5000)
      const now = Date.now()
      const inst = (service: string, id: string): Record<string, unknown> => ({ id, service, cluster: 'default', zone: '', address: `127.0.0.1:${app.port}`, adminPort: 0, startedAt: now, registeredAt: now, warmup: { window: 0, aggression: 1, minWeight: 10, progress: 1 }, weight: 100, state: 'up', ejected: false, updatedAt: now, rev: 0 })
      await reg.register(inst('one', 'one-0'), 600_000)
      for (let i = 0; i < MANY; i++) await reg.register(inst('many', `many-${i}`), 600_000)
      // Each service is watched from its first request on: ask once and wait for an answer from an instance.
      for (const service of ['one', 'many']) {
        await until(`the lane to know ${service}`, async () => (await load.run({ url: `http://127.0.0.1:${outPort}/`, connections: 1, duration: 0.2, headers: { host: service } })).non2xx === 0)
      }
      const targets: Array<{ name: string, url: string, headers?: Record<string, string>, pid?: number }> = [
        { name: 'direct', url: `http://127.0.0.1:${app.port}/` },
        { name: 'http-proxy', url: `http://127.0.0.1:${baseline.port}/`, pid: baseline.proc.pid },
        { name: 'outbound, 1 instance', url: `http://127.0.0.1:${outPort}/`, headers: { host: 'one' }, pid: doorman.proc.pid },
        { name: `outbound, ${MANY} instances`, url: `http://127.0.0.1:${outPort}/`, headers: { host: 'many' }, pid: doorman.proc.pid }
      ]
      for (let round = -1; round < opts.rounds; round++) {
        process.stdout.write(round < 0 ? '  warm-up round' : `  round ${round + 1}/${opts.rounds}`)
        for (let k = 0; k < targets.length; k++) {
          const tg = targets[(k + Math.max(round, 0)) % targets.length]
          const before = tg.pid === undefined ? NaN : cpuMicros(tg.pid)
          const r = await load.run({ url: tg.url, connections: CONNECTIONS, duration: round < 0 ? opts.warmup : opts.duration, headers: tg.headers })
          const cpu = tg.pid === undefined ? NaN : cpuMicros(tg.pid) - before
          if (round < 0) continue
          let c = cells.get(tg.name)
          if (c === undefined) cells.set(tg.name, c = new Cell())
          c.add(r, cpu)
          process.stdout.write('.')
        }
        process.stdout.write('\n')
      }
    } finally {
      load.close()
      await doorman.stop()
      await reg.close()
      baseline.proc.kill()
      app.proc.kill()
      redis.stop()
    }
    const rows: string[][] = []
    for (const [name, c] of cells) rows.push([name, fmt(c.rps), fmt(median(c.p50), 1), fmt(median(c.p99), 1), name === 'direct' ? '—' : fmt(c.cpuPerRequest, 1), String(c.bad)])
    console.log('\n' + table(['target (fast route, 50 conns)', 'req/s', 'p50 ms', 'p99 ms', 'proxy CPU µs/req', 'errors/non-2xx'], rows, 1))
    const one = cells.get('outbound, 1 instance')
    const many = cells.get(`outbound, ${MANY} instances`)
    const hp = cells.get('http-proxy')
    const checks: Check[] = [
      { what: `balancer pick at ${MANY} instances ≤ 2,000 ns`, value: Math.max(equal, warming), ok: (v) => v <= 2000, unit: 'ns' }
    ]
    if (one !== undefined && hp !== undefined) checks.push({ what: 'outbound CPU/req ≤ 0.8 × http-proxy (1 instance)', value: one.cpuPerRequest / hp.cpuPerRequest, ok: (v) => v <= 0.8 })
    // At 1,000 instances the lane keeps a keep-alive connection per instance: the extra CPU is mostly that, not the pick.
    if (one !== undefined && many !== undefined) checks.push({ what: `outbound CPU/req at ${MANY} instances ≤ 1.5 × at 1`, value: many.cpuPerRequest / one.cpuPerRequest, ok: (v) => v <= 1.5 })
    const bad = [...cells.values()].reduce((n, c) => n + c.bad, 0)
    if (bad > 0) checks.push({ what: 'no errors or non-2xx answers', value: bad, ok: () => false })
    return checks
  }
}
