// The downstream the demo app calls (seed 001's get_user_info and getTagInfo): an HTTP server on loopback whose
// getTagInfo latency the scenario raises and lowers. It runs inside the demo's own process.
import http from 'node:http'
import type { AddressInfo } from 'node:net'

export class Downstream {
  readonly server: http.Server
  /** getTagInfo latency in milliseconds (the seed: ~10 ms normally, 500 ms during the incident). */
  tagLatencyMs: number
  /** get_user_info latency in milliseconds. */
  userLatencyMs: number
  calls = 0
  #hung = false
  #held: Array<() => void> = []

  constructor (opts: { tagLatencyMs?: number, userLatencyMs?: number } = {}) {
    this.tagLatencyMs = opts.tagLatencyMs ?? 10
    this.userLatencyMs = opts.userLatencyMs ?? 5
    this.server = http.createServer({ keepAliveTimeout: 10_000 }, (req, res) => {
      this.calls++
      const path = req.url ?? '/'
      const base = path.startsWith('/tag') ? this.tagLatencyMs : this.userLatencyMs
      // ±10% jitter, so the timelines look like measurements rather than a square wave.
      const ms = base * (0.9 + Math.random() * 0.2)
      const answer = (): void => { if (!res.destroyed) res.writeHead(200, { 'content-type': 'application/json' }).end('{"tag":"ok"}') }
      if (this.#hung && path.startsWith('/tag')) { this.#held.push(answer); return }
      setTimeout(answer, ms)
    })
  }

  /** getTagInfo hangs: calls are held, unanswered, until it comes back (then every held call is answered). */
  get hung (): boolean { return this.#hung }
  set hung (v: boolean) {
    if (v === this.#hung) return
    this.#hung = v
    if (!v) for (const answer of this.#held.splice(0)) answer()
  }

  async listen (): Promise<string> {
    await new Promise<void>((resolve) => { this.server.listen(0, '127.0.0.1', resolve) })
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  async close (): Promise<void> {
    this.server.closeAllConnections()
    await new Promise((resolve) => { this.server.close(resolve) })
  }
}
