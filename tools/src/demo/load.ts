// The demo's load generator: open-loop (requests leave at the set rate whether or not earlier ones have been
// answered, as real users arrive), spread round-robin over the endpoints that are ready (a Kubernetes Service in
// miniature), with a client timeout. Every outcome is counted: ok, shed by doorman (503 + x-doorman-shed, safe to
// retry) or failed (timeout, connection refused or reset, no ready endpoint, any other error status).
import http from 'node:http'

export interface Endpoint {
  name: string
  port: number
  host?: string
  ready: () => boolean
}

export type FailKind = 'timeout' | 'refused' | 'reset' | 'no-endpoint' | `http-${number}` | `grpc-${number}` | 'other'

export interface Bucket {
  sent: number
  ok: number
  shed: number
  failed: number
  kinds: Partial<Record<FailKind, number>>
  /** Successful answers by the instance that gave them (the app's `x-instance` header), for traffic shares. */
  byInstance: Record<string, number>
  /** Latency of successful requests, in milliseconds. */
  p50: number
  p99: number
  max: number
}

export interface LoadOptions {
  endpoints: () => Endpoint[]
  path: string
  timeoutMs: number
  /** Extra request headers (the rollout addresses a service by name with `Host`). */
  headers?: Record<string, string>
  tickMs?: number
}

function quantile (sorted: number[], q: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number
}

function emptyCounts (): Omit<Bucket, 'p50' | 'p99' | 'max'> & { latencies: number[] } {
  return { sent: 0, ok: 0, shed: 0, failed: 0, kinds: {}, byInstance: {}, latencies: [] }
}

export class LoadGenerator {
  /** Requests per second; change it at any time. */
  rate = 0
  readonly totals = { sent: 0, ok: 0, shed: 0, failed: 0, kinds: {} as Partial<Record<FailKind, number>> }
  #opts: LoadOptions
  #agent: http.Agent
  #timer: NodeJS.Timeout | null = null
  #credit = 0
  #last = 0
  #next = 0
  #outstanding = 0
  #idle: Array<() => void> = []
  #bucket = emptyCounts()

  constructor (opts: LoadOptions) {
    this.#opts = opts
    // Idle sockets are dropped before the servers' own keep-alive timeout (5 s), so a request never races a close.
    this.#agent = new http.Agent({ keepAlive: true, timeout: 2000 })
  }

  get outstanding (): number { return this.#outstanding }

  start (): void {
    if (this.#timer !== null) return
    this.#last = performance.now()
    this.#timer = setInterval(() => { this.#tick() }, this.#opts.tickMs ?? 10)
  }

  #tick (): void {
    const now = performance.now()
    this.#credit += this.rate * (now - this.#last) / 1000
    this.#last = now
    // Never burst more than a second's worth after a stall of the demo's own event loop.
    if (this.#credit > this.rate) this.#credit = this.rate
    while (this.#credit >= 1) {
      this.#credit -= 1
      this.#send()
    }
  }

  #pick (): Endpoint | undefined {
    const ready = this.#opts.endpoints().filter((e) => e.ready())
    if (ready.length === 0) return undefined
    return ready[this.#next++ % ready.length]
  }

  #send (): void {
    const b = this.#bucket
    b.sent++
    this.totals.sent++
    const ep = this.#pick()
    if (ep === undefined) { this.#fail('no-endpoint'); return }
    this.#outstanding++
    const start = performance.now()
    let settled = false
    const settle = (outcome: 'ok' | 'shed' | FailKind, instance?: string): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (outcome === 'ok') {
        this.#bucket.ok++
        this.totals.ok++
        this.#bucket.latencies.push(performance.now() - start)
        if (instance !== undefined) this.#bucket.byInstance[instance] = (this.#bucket.byInstance[instance] ?? 0) + 1
      } else if (outcome === 'shed') {
        this.#bucket.shed++
        this.totals.shed++
      } else {
        this.#fail(outcome)
      }
      if (--this.#outstanding === 0) for (const fn of this.#idle.splice(0)) fn()
    }
    const req = http.request({ host: ep.host ?? '127.0.0.1', port: ep.port, path: this.#opts.path, agent: this.#agent, headers: this.#opts.headers }, (res) => {
      const status = res.statusCode ?? 0
      const shed = status === 503 && res.headers['x-doorman-shed'] !== undefined
      const instance = res.headers['x-instance']
      res.on('error', () => { settle('reset') })
      res.on('end', () => {
        if (status >= 200 && status < 300) settle('ok', typeof instance === 'string' ? instance : undefined)
        else settle(shed ? 'shed' : `http-${status}`)
      })
      res.resume()
    })
    const timer = setTimeout(() => { settle('timeout'); req.destroy() }, this.#opts.timeoutMs)
    req.on('error', (err: NodeJS.ErrnoException) => {
      settle(err.code === 'ECONNREFUSED' ? 'refused' : err.code === 'ECONNRESET' || err.message === 'socket hang up' ? 'reset' : 'other')
    })
    req.end()
  }

  #fail (kind: FailKind): void {
    this.#bucket.failed++
    this.#bucket.kinds[kind] = (this.#bucket.kinds[kind] ?? 0) + 1
    this.totals.failed++
    this.totals.kinds[kind] = (this.totals.kinds[kind] ?? 0) + 1
  }

  /** The counts since the last call. */
  take (): Bucket {
    const b = this.#bucket
    this.#bucket = emptyCounts()
    const sorted = b.latencies.sort((x, y) => x - y)
    return { sent: b.sent, ok: b.ok, shed: b.shed, failed: b.failed, kinds: b.kinds, byInstance: b.byInstance, p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), max: sorted.length > 0 ? sorted[sorted.length - 1] as number : 0 }
  }

  /** Stops sending new requests. */
  stop (): void {
    if (this.#timer !== null) { clearInterval(this.#timer); this.#timer = null }
  }

  /** Resolves when every request sent so far has an outcome (each has the client timeout at most). */
  async settled (): Promise<void> {
    if (this.#outstanding === 0) return
    await new Promise<void>((resolve) => { this.#idle.push(resolve) })
  }

  close (): void {
    this.stop()
    this.#agent.destroy()
  }
}
