// `http`: a request (method, path, headers) whose status must fall in `expect` (default 2xx), over HTTPS verified
// against a CA file when `tls` is set. Connections are kept alive between rounds (one handshake per target, not one
// per probe); a kept connection to a frozen process fails as a new one would: no answer before the timeout.
import { readFileSync } from 'node:fs'
import { Agent } from 'undici'
import type { HttpCheck } from '../../check/spec.js'
import { version } from '../../core/version.js'
import { errorCode, type CheckCall, type CheckModule, type CheckOutcome } from './types.js'

export class HttpCheckModule implements CheckModule<HttpCheck> {
  readonly type = 'http' as const
  readonly #keepAlive: number
  /** One agent per TLS setting: '' (cleartext, and HTTPS against the system's CAs) or a CA file's path. */
  readonly #agents = new Map<string, Agent>()

  constructor (opts: { keepAlive: number }) {
    this.#keepAlive = opts.keepAlive
  }

  #agent (tls: HttpCheck['tls']): Agent {
    const key = tls?.ca ?? ''
    let a = this.#agents.get(key)
    if (a === undefined) {
      // The CA file is read once, when a check first needs it: an unreadable file fails that check's probes.
      const ca = key === '' ? undefined : readFileSync(key)
      a = new Agent({ keepAliveTimeout: this.#keepAlive, keepAliveMaxTimeout: this.#keepAlive, pipelining: 1, connect: ca === undefined ? {} : { ca } })
      this.#agents.set(key, a)
    }
    return a
  }

  async probe (spec: HttpCheck, call: CheckCall): Promise<CheckOutcome> {
    const ac = new AbortController()
    const timer = setTimeout(() => { ac.abort() }, call.timeout)
    try {
      const host = call.host.includes(':') ? `[${call.host}]` : call.host
      const origin = `${spec.tls !== undefined ? 'https' : 'http'}://${host}:${call.port}`
      const res = await this.#agent(spec.tls).request({
        origin,
        path: spec.path,
        method: spec.method as 'GET',
        signal: ac.signal,
        headers: { 'user-agent': `doorman-checker/${version}`, ...spec.headers }
      })
      await res.body.dump({ limit: 16_384 })
      if (ac.signal.aborted) return { outcome: 'timeout', detail: 'timeout' }
      const [lo, hi] = spec.expect
      return { outcome: res.statusCode >= lo && res.statusCode <= hi ? 'ok' : 'status', detail: String(res.statusCode) }
    } catch (err) {
      if (ac.signal.aborted) return { outcome: 'timeout', detail: 'timeout' }
      const code = errorCode(err)
      if (code === 'UND_ERR_CONNECT_TIMEOUT') return { outcome: 'timeout', detail: code }
      return { outcome: code === 'ECONNREFUSED' ? 'refused' : 'error', detail: code }
    } finally {
      clearTimeout(timer)
    }
  }

  async close (): Promise<void> {
    await Promise.all([...this.#agents.values()].map(async (a) => { await a.close().catch(() => {}) }))
    this.#agents.clear()
  }
}
