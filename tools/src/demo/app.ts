// The demo's example app, shaped like the service in seed 001: a fixed pool of request workers (Tomcat's 200
// threads, here `--workers`) that every request needs, `/health` included; a business endpoint that calls a
// downstream once, then hands two sub-tasks to a much smaller inner executor (the seed's static 20-thread
// EXECUTOR, here `--executor`) and waits for both (future.get()); each sub-task calls a downstream whose latency
// the demo can raise. Requests wait for a worker in an unbounded FIFO, as they wait in Tomcat's task queue.
//
// Started by the demo with fork(): it reports its port and its pool's busy/max counts over the IPC channel every
// `--stats-ms`. `/health/live` is a progress-style liveness check (down while requests are stuck for `--stall-ms`).
// Run by hand: `node tools/dist/demo/app.js --port 8080 --downstream http://127.0.0.1:9000`.
import http from 'node:http'
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'

export interface AppStats {
  type: 'stats'
  /** Request workers busy, and the pool's size (the seed's Busy Threads / Max Threads). */
  busy: number
  max: number
  /** Requests accepted and waiting for a worker. */
  queued: number
  /** The inner executor: busy threads, size, sub-tasks waiting. */
  execBusy: number
  execMax: number
  execQueued: number
  completed: number
}

/** A fixed number of slots and a FIFO of waiters: a thread pool's admission, without the threads. */
export class Pool {
  busy = 0
  #waiters: Array<() => void> = []
  #head = 0
  constructor (readonly size: number) {}
  get queued (): number { return this.#waiters.length - this.#head }
  async acquire (): Promise<void> {
    if (this.busy < this.size) { this.busy++; return }
    await new Promise<void>((resolve) => { this.#waiters.push(resolve) })
  }

  release (): void {
    if (this.#head < this.#waiters.length) {
      const next = this.#waiters[this.#head] as () => void
      this.#waiters[this.#head++] = undefined as unknown as () => void
      if (this.#head > 1024 && this.#head * 2 > this.#waiters.length) { this.#waiters = this.#waiters.slice(this.#head); this.#head = 0 }
      next()
      return
    }
    this.busy--
  }

  async run<T> (fn: () => Promise<T>): Promise<T> {
    await this.acquire()
    try { return await fn() } finally { this.release() }
  }
}

interface Options {
  port: number
  host: string
  workers: number
  executor: number
  downstream: string
  startupMs: number
  statsMs: number
  name: string
  /** `/health/live`, the app's own progress watchdog, fails while requests are in flight and none completed for this long. */
  stallMs: number
}

function options (argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      workers: { type: 'string', default: '20' },
      executor: { type: 'string', default: '8' },
      downstream: { type: 'string' },
      'startup-ms': { type: 'string', default: '0' },
      'stats-ms': { type: 'string', default: '250' },
      name: { type: 'string', default: 'app' },
      'stall-ms': { type: 'string', default: '3000' }
    },
    strict: true
  })
  const int = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v)
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`)
    return n
  }
  if (values.downstream === undefined) throw new Error('--downstream URL is required')

  return {
    port: int('port', values.port, 0),
    host: values.host,
    workers: int('workers', values.workers, 1),
    executor: int('executor', values.executor, 1),
    downstream: values.downstream,
    startupMs: int('startup-ms', values['startup-ms'], 0),
    statsMs: int('stats-ms', values['stats-ms'], 10),
    name: values.name,
    stallMs: int('stall-ms', values['stall-ms'], 1)
  }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })

async function call (base: string, path: string): Promise<string> {
  return await new Promise((resolve, reject) => {
    const req = http.get(base + path, { agent }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => { (res.statusCode ?? 0) < 400 ? resolve(body) : reject(new Error(`downstream ${path}: HTTP ${res.statusCode}`)) })
      res.on('error', reject)
    })
    req.on('error', reject)
  })
}

export async function main (argv: string[]): Promise<void> {
  const o = options(argv)
  const workers = new Pool(o.workers)
  const executor = new Pool(o.executor)
  let completed = 0
  // The app's own progress watchdog (a common health indicator): business requests in flight, and when one last completed.
  let inflight = 0
  let lastCompletion = Date.now()

  const server = http.createServer({ keepAliveTimeout: 5000 }, (req, res) => {
    // Every request needs a worker before anything else happens, the health check included.
    void workers.run(async () => {
      try {
        const path = (req.url ?? '/').split('?')[0]
        if (path === '/health') {
          res.writeHead(200, { 'content-type': 'text/plain' }).end('UP\n')
        } else if (path === '/health/live') {
          // A progress-style liveness check, as apps often write one: down while work is stuck.
          const stalled = inflight > 0 && Date.now() - lastCompletion >= o.stallMs
          if (stalled) res.writeHead(503, { 'content-type': 'text/plain' }).end(`DOWN: ${inflight} requests in flight, none completed for ${Date.now() - lastCompletion} ms\n`)
          else res.writeHead(200, { 'content-type': 'text/plain' }).end('UP\n')
        } else if (path === '/evaluate') {
          inflight++
          if (inflight === 1) lastCompletion = Date.now()
          try {
            // get_user_info, then two sub-tasks on the small executor, then wait for both.
            await call(o.downstream, '/user')
            const [a, b] = await Promise.all([
              executor.run(async () => await call(o.downstream, '/tag')),
              executor.run(async () => await call(o.downstream, '/tag'))
            ])
            const body = JSON.stringify({ instance: o.name, price: a.length + b.length }) + '\n'
            res.writeHead(200, { 'content-type': 'application/json', 'x-instance': o.name }).end(body)
            lastCompletion = Date.now()
          } finally {
            inflight--
          }
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
        }
      } catch (err) {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`)
        else res.destroy()
      }
      completed++
    })
  })

  const stats = (): AppStats => ({ type: 'stats', busy: workers.busy, max: o.workers, queued: workers.queued, execBusy: executor.busy, execMax: o.executor, execQueued: executor.queued, completed })
  const send = (m: unknown): void => { if (process.connected) process.send?.(m) }
  const timer = setInterval(() => { send(stats()) }, o.statsMs)
  timer.unref()

  // Like an app with no graceful shutdown of its own: SIGTERM drops every connection, in flight or not, and the
  // process ends as soon as nothing is left.
  let stopping = false
  let startupTimer: NodeJS.Timeout | undefined
  const stop = (): void => {
    stopping = true
    clearTimeout(startupTimer)
    clearInterval(timer)
    server.closeAllConnections()
    server.close()
    agent.destroy()
    if (process.connected) process.disconnect?.()
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  process.once('disconnect', stop)

  // A JVM-like start-up time before the port opens.
  await new Promise((resolve) => { startupTimer = setTimeout(resolve, o.startupMs) })
  if (stopping) return
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(o.port, o.host, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as { port: number }).port
  send({ type: 'listening', port })
  if (process.send === undefined) process.stdout.write(`demo app ${o.name} listening on ${o.host}:${port}\n`)
}

// Entry point when run as a process (fork or node tools/dist/demo/app.js).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: Error) => {
    process.stderr.write(`demo app: ${err.message}\n`)
    process.exitCode = 1
  })
}
