// Helpers shared by the checker's suites: instance records, `doorman checker` child processes, reading a checker's
// /state and /metrics.
import { CLI, freePort, getJson, request, spawnNode, waitFor, type Child } from './helpers/index.js'
import type { Instance } from '../src/registry/types.js'

interface Teardown { teardown: (fn: () => unknown) => void }

/** A registry record for an instance whose inbound port is `port` and lane port `adminPort` (0 = none). */
export function instance (service: string, id: string, port: number, adminPort: number, extra: Partial<Instance> = {}): Instance {
  const now = Date.now()
  return {
    id,
    service,
    cluster: 'default',
    zone: '',
    address: `127.0.0.1:${port}`,
    adminPort,
    startedAt: now,
    registeredAt: now,
    warmup: { window: 0, aggression: 1, minWeight: 10, progress: 1 },
    weight: 100,
    state: 'up',
    ejected: false,
    updatedAt: now,
    rev: 0,
    ...extra
  }
}

/** Short rounds so suites stay quick: 300 ms interval, 200 ms timeout, 3 failures eject, 2 successes recover. */
export const FAST = {
  DOORMAN_CHECK_INTERVAL: '300ms',
  DOORMAN_CHECK_TIMEOUT: '200ms',
  DOORMAN_CHECK_FAILURES: '3',
  DOORMAN_CHECK_SUCCESSES: '2'
}

export interface CheckerProc extends Child { admin: number }

/** Starts `doorman checker` on a free admin port; resolves once its /readyz passes (a first round is done). */
export async function startChecker (t: Teardown, env: Record<string, string>, opts: { waitReady?: boolean } = {}): Promise<CheckerProc> {
  const admin = await freePort()
  const child = spawnNode(t, [CLI, 'checker'], {
    DOORMAN_BIND_HOST: '127.0.0.1',
    DOORMAN_LOG_LEVEL: 'warn',
    ...FAST,
    ...env,
    DOORMAN_ADMIN_PORT: String(admin)
  })
  let exited = false
  void child.exited.then(() => { exited = true })
  if (opts.waitReady !== false) {
    await waitFor('checker /readyz', async () => {
      if (exited) throw new Error(`checker exited: ${child.output()}`)
      return (await request(admin, { path: '/readyz', timeout: 1000 })).status === 200
    }, 15_000)
  }
  return { ...child, admin }
}

export interface CheckerState {
  replica: string
  group: string
  replicas: string[]
  mode: string
  services: string[]
  targets: number
  lastRound: { round: number, durationMs: number, failed: number } | null
  failing: Array<{ service: string, id: string, failures: number }>
  events: Array<{ action: string, id: string, reason?: string }>
}

export async function checkerState (admin: number): Promise<CheckerState> {
  return await getJson<CheckerState>(admin, '/state')
}

/** One sample's value from a Prometheus text page (0 when absent). */
export async function metric (admin: number, name: string, labels = ''): Promise<number> {
  const text = (await request(admin, { path: '/metrics', timeout: 5000 })).body
  const line = text.split('\n').find((l) => l.startsWith(labels === '' ? `${name} ` : `${name}{${labels}} `))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1))
}

/** Waits until the checker has completed `n` more rounds than now. */
export async function rounds (admin: number, n: number, timeoutMs = 15_000): Promise<void> {
  const start = (await checkerState(admin)).lastRound?.round ?? 0
  await waitFor(`${n} more checker rounds`, async () => ((await checkerState(admin)).lastRound?.round ?? 0) >= start + n, timeoutMs)
}
