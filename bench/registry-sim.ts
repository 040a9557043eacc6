// One process of simulated sidecars for the registry section (bench/registry.ts): instances (the real Registration
// loop each, on a Redis client of its own as in a sidecar: instances sharing a connection would have their commands
// batched into fewer reads and writes than a fleet's separate sidecars ever get) and watching sidecars (one
// RedisRegistry each, as a sidecar's outbound lane holds). Driven over IPC by the section.
//
// The registry is loaded from BENCH_REGISTRY_DIST (a build's dist/registry), so the same simulation measures
// another build of doorman too (the section's "today" column was measured that way).
import path from 'node:path'
import { pathToFileURL } from 'node:url'

interface Stats { listings: number, checks: number, sweeps: number, gaps: number }
interface Watch { ready: Promise<void>, view: ReadonlyMap<string, unknown>, close: () => void }
interface Registry {
  waitUp: (ms: number) => Promise<boolean>
  watch: (service: string) => Watch
  close: () => Promise<void>
  connections?: () => { commands: number, subscriber: number }
  stats?: Stats
}
interface Registration {
  registered: boolean
  setEndpoint: (address: string, adminPort: number) => void
  setAppReady: (ready: boolean) => void
  ownState: () => string
  drain: () => Promise<void>
  close: () => Promise<void>
}

const dist = process.env.BENCH_REGISTRY_DIST ?? ''
const url = process.env.BENCH_REGISTRY_URL ?? ''
const from = Number(process.env.BENCH_FROM)
const to = Number(process.env.BENCH_TO)
const perService = Number(process.env.BENCH_PER_SERVICE)
const ttl = Number(process.env.BENCH_TTL)

const index = await import(pathToFileURL(path.join(dist, 'index.js')).href) as { RedisRegistry: new (o: Record<string, unknown>) => Registry, parseRegistryUrl: (u: string) => unknown, checkPeriod?: (ttl: number) => number }
const { Registration: RegistrationClass } = await import(pathToFileURL(path.join(dist, 'registration.js')).href) as { Registration: new (o: Record<string, unknown>) => Registration }
const { createLogger } = await import(pathToFileURL(path.join(dist, '..', 'core', 'log.js')).href) as { createLogger: (level: string, dest: { write: (s: string) => void }) => unknown }
const log = createLogger('error', { write: () => {} })
const target = index.parseRegistryUrl(url)

function service (i: number): string { return `svc-${Math.floor(i / perService)}` }

/** Instances per Redis client: 1 on a standalone server; on a Cluster a few (each client holds a connection per node). */
const perClient = Number(process.env.BENCH_INSTANCES_PER_CLIENT ?? '1')
const clients: Registry[] = []
const instances = new Map<string, Registration>()
let started = 0
function start (id: string, svc: string, window: number): Registration {
  if (started++ % perClient === 0) clients.push(new index.RedisRegistry({ target, commandTimeout: 10_000 }))
  const own = clients[clients.length - 1]
  const r = new RegistrationClass({ registry: own, id, service: svc, cluster: 'default', zone: 'z1', warmup: { window, aggression: 1, minWeight: 10 }, ttl, delay: 0, log })
  r.setEndpoint('127.0.0.1:1', 2)
  r.setAppReady(true)
  instances.set(id, r)
  return r
}
async function until (fn: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (!fn()) {
    if (Date.now() > deadline) throw new Error('bench registry sim: timed out')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

const floorClients: Array<{ ping: () => Promise<string>, quit: () => Promise<unknown> }> = []
const floorTimers: NodeJS.Timeout[] = []
const sidecars: Registry[] = []
const watches: Watch[] = []

function stats (): Stats & { connections: number, subscriber: number, sidecars: number } {
  const out = { listings: 0, checks: 0, sweeps: 0, gaps: 0, connections: 0, subscriber: 0, sidecars: sidecars.length }
  for (const s of sidecars) {
    out.listings += s.stats?.listings ?? NaN
    out.checks += s.stats?.checks ?? NaN
    out.sweeps += s.stats?.sweeps ?? NaN
    out.gaps += s.stats?.gaps ?? NaN
    const c = s.connections?.()
    out.connections += c === undefined ? NaN : c.commands + c.subscriber
    out.subscriber += c === undefined ? NaN : c.subscriber
  }
  return out
}

process.on('message', (msg: { t: string, sidecars?: number, services?: string[][], service?: string, window?: number, batch?: number }) => {
  void (async () => {
    switch (msg.t) {
      case 'register': {
        for (let i = from; i < to; i++) start(`${service(i)}-${i}`, service(i), 0)
        await until(() => [...instances.values()].every((r) => r.registered), 300_000)
        process.send?.({ t: 'registered' })
        break
      }
      case 'watch': {
        for (const list of msg.services ?? []) {
          // The watch options a sidecar of that build passes: builds with checkPeriod() check every few TTLs (checkMs);
          // earlier ones took resyncMs, TTL/3.
          const s = new index.RedisRegistry({ target, commandTimeout: 10_000, resyncMs: Math.floor(ttl / 3), checkMs: index.checkPeriod?.(ttl) })
          sidecars.push(s)
          for (const svc of list) watches.push(s.watch(svc))
        }
        await Promise.all(watches.map(async (w) => { await w.ready }))
        process.send?.({ t: 'watching', checkMs: index.checkPeriod?.(ttl) ?? Math.floor(ttl / 3), ...stats() })
        break
      }
      case 'floor': {
        // The floor: as many connections as the instances here hold (one each; on a Cluster one per perClient), each
        // instance sending one PING per heartbeat period (TTL/3, jittered down to 80 % of it, as Registration beats)
        // and nothing else: what one round trip per instance per beat costs this server on this machine.
        const { Redis, Cluster } = await import('ioredis')
        const t = target as { mode: string, nodes?: Array<{ host: string, port: number }>, host?: string, port?: number }
        for (let i = from, k = 0; i < to; i++, k++) {
          if (k % perClient === 0) floorClients.push(t.mode === 'cluster' ? new Cluster(t.nodes ?? []) : new Redis({ host: t.host, port: t.port }))
          const c = floorClients[floorClients.length - 1]
          const period = ttl / 3
          const beat = (): void => {
            c.ping().catch(() => {})
            floorTimers.push(setTimeout(beat, period * (0.8 + 0.2 * Math.random())))
          }
          floorTimers.push(setTimeout(beat, period * Math.random()))
        }
        await Promise.all(floorClients.map(async (c) => { await c.ping() }))
        process.send?.({ t: 'floored' })
        break
      }
      case 'unfloor':
        for (const timer of floorTimers) clearTimeout(timer)
        await Promise.allSettled(floorClients.map(async (c) => { await c.quit() }))
        floorClients.length = 0
        process.send?.({ t: 'unfloored' })
        break
      case 'stats':
        process.send?.({ t: 'stats', ...stats() })
        break
      case 'replace': {
        // A rolling replacement of the service's instances in this process, `batch` at a time: start the new one,
        // and once it is registered drain the old one and deregister it.
        const svc = msg.service ?? ''
        const old = [...instances.entries()].filter(([id]) => id.startsWith(`${svc}-`))
        const fresh: Registration[] = []
        for (let i = 0; i < old.length; i += msg.batch ?? 10) {
          await Promise.all(old.slice(i, i + (msg.batch ?? 10)).map(async ([id, r]) => {
            const n = start(`${id}-new`, svc, msg.window ?? 0)
            fresh.push(n)
            await until(() => n.registered, 30_000)
            await r.drain()
            await r.close()
            instances.delete(id)
          }))
        }
        await until(() => fresh.every((r) => r.ownState() === 'up'), 60_000)
        process.send?.({ t: 'replaced', n: old.length })
        break
      }
      case 'stop':
        for (const w of watches) w.close()
        await Promise.allSettled(sidecars.map(async (s) => { await s.close() }))
        await Promise.allSettled([...instances.values()].map(async (r) => { await r.close() }))
        await Promise.allSettled(clients.map(async (c) => { await c.close() }))
        process.exit(0)
    }
  })().catch((err: unknown) => { console.error(err); process.exit(1) })
})
process.send?.({ t: 'up' })
