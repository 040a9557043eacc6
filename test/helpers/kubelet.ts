// A prober that behaves like kubelet: every period, one HTTP GET with a timeout; 200–399 passes; after
// `failureThreshold` consecutive failures it counts a restart (and calls onRestart, which may really restart).
import http from 'node:http'

export interface ProbeRecord { at: number, ok: boolean, ms: number, status: number, body: string }

export interface KubeletOptions {
  port: number
  path: string
  periodMs: number
  timeoutMs: number
  failureThreshold: number
  onRestart?: () => void | Promise<void>
}

export class Kubelet {
  readonly records: ProbeRecord[] = []
  restarts = 0
  #consecutive = 0
  #timer: NodeJS.Timeout | null = null
  #opts: KubeletOptions

  constructor (opts: KubeletOptions) { this.#opts = opts }

  get failures (): number { return this.records.filter((r) => !r.ok).length }

  start (): this {
    this.#timer = setInterval(() => { void this.probe() }, this.#opts.periodMs)
    return this
  }

  stop (): void { if (this.#timer !== null) clearInterval(this.#timer); this.#timer = null }

  async probe (): Promise<ProbeRecord> {
    const started = performance.now()
    const [status, body] = await new Promise<[number, string]>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: this.#opts.port, path: this.#opts.path, agent: false, timeout: this.#opts.timeoutMs }, (res) => {
        let b = ''
        res.on('data', (c: Buffer) => { if (b.length < 500) b += c.toString() })
        res.on('end', () => { resolve([res.statusCode ?? 0, b]) })
      })
      req.on('timeout', () => { req.destroy(); resolve([-1, 'timed out']) })
      req.on('error', (err) => { resolve([0, err.message]) })
    })
    const rec = { at: Date.now(), ok: status >= 200 && status < 400, ms: performance.now() - started, status, body }
    this.records.push(rec)
    if (rec.ok) this.#consecutive = 0
    else if (++this.#consecutive >= this.#opts.failureThreshold) {
      this.#consecutive = 0
      this.restarts++
      await this.#opts.onRestart?.()
    }
    return rec
  }
}
