// The mTLS section's client for "a new connection per request": in a process of its own (over IPC), `connections`
// loops each sending GET / on a fresh connection (agent: false) — over mTLS with the given pair, or plaintext — for
// `duration` seconds. autocannon keeps connections alive, which is what this must not do.
import http from 'node:http'
import https from 'node:https'

export interface TlsLoadRequest {
  port: number
  connections: number
  duration: number
  /** PEM client pair, trust bundle and server name; absent: plaintext. */
  tls?: { cert: string, key: string, ca: string, servername: string }
  headers?: Record<string, string>
}
export interface TlsLoadResult { requests: number, seconds: number, errors: number, firstError: string }

process.on('message', (msg: TlsLoadRequest) => {
  void run(msg).then((r) => process.send?.(r))
})
process.on('disconnect', () => { process.exit(0) })

async function run (req: TlsLoadRequest): Promise<TlsLoadResult> {
  const started = process.hrtime.bigint()
  const end = Date.now() + req.duration * 1000
  let requests = 0
  let errors = 0
  let firstError = ''
  const one = async (): Promise<void> => await new Promise((resolve) => {
    const opts = { host: '127.0.0.1', port: req.port, path: '/', agent: false as const, headers: { ...req.headers, connection: 'close' }, timeout: 10_000 }
    const r = req.tls === undefined
      ? http.request(opts)
      : https.request({ ...opts, ...req.tls, checkServerIdentity: () => undefined })
    r.on('response', (res) => {
      res.resume()
      res.on('end', () => { if (res.statusCode === 200) requests++; else { errors++; firstError ||= `status ${String(res.statusCode)}` } resolve() })
    })
    r.on('timeout', () => { r.destroy(new Error('timeout')) })
    r.on('error', (err) => { errors++; firstError ||= err.message; resolve() })
    r.end()
  })
  await Promise.all(Array.from({ length: req.connections }, async () => { while (Date.now() < end) await one() }))
  return { requests, seconds: Number(process.hrtime.bigint() - started) / 1e9, errors, firstError }
}
