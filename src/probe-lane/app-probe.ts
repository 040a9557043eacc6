// Runs one of the app's own probes (httpGet, tcpSocket, grpc), as kubelet would, over a connection of its own:
// never through the business pool or its queue.
// node:https and node:http2 are loaded by the first probe that needs them: a few MB of the lane thread otherwise.
import net from 'node:net'
import type { AppProbe } from '../config/index.js'
import { http } from '../core/http.js'

export interface ProbeResult {
  ok: boolean
  detail: string
}

export interface ProbeTarget {
  host: string
  /** The app port, used when a probe names its port by name (the injector normally resolves names). */
  port: number
}

function portOf (p: number | string, fallback: number): number {
  const n = typeof p === 'number' ? p : Number(p)
  return Number.isInteger(n) && n > 0 ? n : fallback
}

/** Runs the probe; resolves (never rejects) with the outcome. */
export async function runProbe (probe: AppProbe, target: ProbeTarget, fallbackTimeoutMs = 1000): Promise<ProbeResult> {
  const timeout = probe.timeoutSeconds !== undefined ? probe.timeoutSeconds * 1000 : fallbackTimeoutMs
  if (probe.httpGet !== undefined) return await httpProbe(probe.httpGet, target, timeout)
  if (probe.tcpSocket !== undefined) return await tcpProbe(probe.tcpSocket.host ?? target.host, portOf(probe.tcpSocket.port, target.port), timeout)
  if (probe.grpc !== undefined) return await grpcProbe(target.host, portOf(probe.grpc.port, target.port), probe.grpc.service ?? '', timeout)
  return { ok: false, detail: 'probe has no handler' }
}

async function httpProbe (g: NonNullable<AppProbe['httpGet']>, target: ProbeTarget, timeout: number): Promise<ProbeResult> {
  const secure = (g.scheme ?? 'HTTP').toUpperCase() === 'HTTPS'
  const headers: Record<string, string> = { 'user-agent': 'doorman-probe', accept: '*/*', connection: 'close' }
  for (const h of g.httpHeaders ?? []) headers[h.name.toLowerCase()] = h.value
  return await new Promise((resolve) => {
    const req = (secure ? process.getBuiltinModule('node:https') : http).request({
      host: g.host ?? target.host,
      port: portOf(g.port, target.port),
      path: g.path ?? '/',
      method: 'GET',
      headers,
      agent: false,
      timeout,
      // kubelet does not verify the app's certificate either.
      rejectUnauthorized: false
    }, (res) => {
      const status = res.statusCode ?? 0
      res.resume()
      resolve(status >= 200 && status < 400 ? { ok: true, detail: `HTTP ${status}` } : { ok: false, detail: `HTTP ${status}` })
    })
    req.on('timeout', () => { req.destroy(); resolve({ ok: false, detail: `timed out after ${timeout}ms` }) })
    req.on('error', (err: NodeJS.ErrnoException) => { resolve({ ok: false, detail: err.code ?? err.message }) })
    req.end()
  })
}

export async function tcpProbe (host: string, port: number, timeout: number): Promise<ProbeResult> {
  return await new Promise((resolve) => {
    const s = net.connect({ host, port })
    const timer = setTimeout(() => { s.destroy(); resolve({ ok: false, detail: `connect timed out after ${timeout}ms` }) }, timeout)
    s.once('connect', () => { clearTimeout(timer); s.destroy(); resolve({ ok: true, detail: 'connected' }) })
    s.once('error', (err: NodeJS.ErrnoException) => { clearTimeout(timer); resolve({ ok: false, detail: err.code ?? err.message }) })
  })
}

/** grpc.health.v1.Health/Check over cleartext HTTP/2; SERVING (1) passes. */
async function grpcProbe (host: string, port: number, service: string, timeout: number): Promise<ProbeResult> {
  return await new Promise((resolve) => {
    let settled = false
    const done = (r: ProbeResult): void => { if (!settled) { settled = true; clearTimeout(timer); session.close(); resolve(r) } }
    const session = process.getBuiltinModule('node:http2').connect(`http://${host.includes(':') ? `[${host}]` : host}:${port}`)
    const timer = setTimeout(() => { session.destroy(); done({ ok: false, detail: `timed out after ${timeout}ms` }) }, timeout)
    session.on('error', (err: NodeJS.ErrnoException) => { done({ ok: false, detail: err.code ?? err.message }) })
    // HealthCheckRequest { string service = 1; }
    const svc = Buffer.from(service)
    const msg = svc.length > 0 ? Buffer.concat([Buffer.from([0x0a, svc.length]), svc]) : Buffer.alloc(0)
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg])
    const req = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers' })
    const chunks: Buffer[] = []
    let grpcStatus: string | undefined
    req.on('response', (h) => { if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']) })
    req.on('trailers', (h) => { if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']) })
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('error', (err: NodeJS.ErrnoException) => { done({ ok: false, detail: err.code ?? err.message }) })
    req.on('end', () => {
      if (grpcStatus !== '0') { done({ ok: false, detail: `grpc-status ${grpcStatus ?? 'missing'}` }); return }
      const body = Buffer.concat(chunks)
      // HealthCheckResponse { ServingStatus status = 1; } SERVING = 1
      const status = body.length >= 7 && body[5] === 0x08 ? body[6] : 0
      done(status === 1 ? { ok: true, detail: 'SERVING' } : { ok: false, detail: `serving status ${status}` })
    })
    req.end(frame)
  })
}
