// A small mesh for end-to-end tests: provider apps behind their own `doorman run`, a consumer doorman whose
// outbound lane calls them by service name, all registered in a private redis-server; and a steady load generator.
import http from 'node:http'
import { startServer, startDoorman, type Doorman } from './index.js'

interface Teardown { teardown: (fn: () => unknown) => void }

export interface Provider {
  name: string
  app: number
  dm: Doorman
  /** Date.now() of every request the app received. */
  arrivals: number[]
}

/** An app answering with its name, behind a doorman registered as `service`. */
export async function startProvider (t: Teardown, registry: string, name: string, env: Record<string, string> = {}, service = 'orders'): Promise<Provider> {
  const arrivals: number[] = []
  const { port } = await startServer(t, (req, res) => {
    arrivals.push(Date.now())
    req.resume()
    req.on('end', () => { res.end(name) })
  })
  const dm = await startDoorman(t, {
    DOORMAN_APP_PORT: String(port),
    DOORMAN_REGISTRY: registry,
    DOORMAN_SERVICE: service,
    DOORMAN_APP_CHECK_INTERVAL: '100ms',
    DOORMAN_LOG_LEVEL: 'warn',
    ...env
  })
  return { name, app: port, dm, arrivals }
}

/** A doorman with its outbound lane on, registered as `frontend`, in front of an app that does nothing. */
export async function startConsumer (t: Teardown, registry: string, env: Record<string, string> = {}): Promise<Doorman> {
  const { port } = await startServer(t, (_req, res) => { res.end('frontend') })
  const { freePort } = await import('./index.js')
  return await startDoorman(t, {
    DOORMAN_APP_PORT: String(port),
    DOORMAN_REGISTRY: registry,
    DOORMAN_SERVICE: 'frontend',
    DOORMAN_OUTBOUND_PORT: String(await freePort()),
    ...env
  })
}

export interface Sample { sentAt: number, doneAt: number, status: number, body: string, error?: string }

/**
 * Steady traffic: `concurrency` workers, each sending `GET /` with `Host: service` to the outbound port over
 * keep-alive connections (as an app's HTTP client would) and pausing `pauseMs` between requests.
 */
export function steadyLoad (port: number, opts: { concurrency?: number, pauseMs?: number, service?: string } = {}): { samples: Sample[], stop: () => Promise<void> } {
  const samples: Sample[] = []
  const concurrency = opts.concurrency ?? 4
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency })
  let running = true
  const one = async (): Promise<void> => {
    const sentAt = Date.now()
    await new Promise<void>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/', headers: { host: opts.service ?? 'orders' }, agent, timeout: 10_000 }, (res) => {
        let body = ''
        res.on('data', (c: Buffer) => { body += c.toString() })
        res.on('end', () => { samples.push({ sentAt, doneAt: Date.now(), status: res.statusCode ?? 0, body }); resolve() })
        res.on('error', (err) => { samples.push({ sentAt, doneAt: Date.now(), status: 0, body, error: err.message }); resolve() })
      })
      req.on('timeout', () => { req.destroy(new Error('timeout')) })
      req.on('error', (err) => { samples.push({ sentAt, doneAt: Date.now(), status: 0, body: '', error: err.message }); resolve() })
      req.end()
    })
  }
  const workers = Array.from({ length: concurrency }, async () => {
    while (running) {
      await one()
      if ((opts.pauseMs ?? 0) > 0) await new Promise((resolve) => setTimeout(resolve, opts.pauseMs))
    }
  })
  return {
    samples,
    stop: async () => { running = false; await Promise.all(workers); agent.destroy() }
  }
}

/** Failed samples (anything but a 200 from a provider). */
export function failures (samples: Sample[]): Sample[] {
  return samples.filter((s) => s.status !== 200 || s.error !== undefined)
}

/** Share of the samples sent in [from, to) that `name` answered. */
export function share (samples: Sample[], name: string, from: number, to: number): { share: number, n: number } {
  const inWindow = samples.filter((s) => s.sentAt >= from && s.sentAt < to)
  const mine = inWindow.filter((s) => s.body === name).length
  return { share: inWindow.length === 0 ? 0 : mine / inWindow.length, n: inWindow.length }
}
