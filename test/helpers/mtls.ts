// Clients for the mTLS tests: HTTP/1.1 and HTTP/2 over mutual TLS with a given key pair, each on a fresh connection.
// The workloads' certificates carry a SPIFFE ID and no DNS name or IP address, as csi-driver-spiffe issues them: the
// clients check the server's SPIFFE ID themselves (`expect`) instead of a host name.
import https from 'node:https'
import http2 from 'node:http2'
import tls from 'node:tls'
import net from 'node:net'
import { X509Certificate } from 'node:crypto'
import type { Leaf } from './pki.js'

export interface TlsClient { cert?: string, key?: string, ca: string, expect?: string }

function serverCheck (expect: string | undefined): (host: string, cert: tls.PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    if (expect === undefined) return undefined
    const san = cert.subjectaltname ?? ''
    return san === `URI:${expect}` ? undefined : new Error(`server is ${san}, expected ${expect}`)
  }
}

export function clientOf (leaf: Leaf | null, ca: string, expect?: string): TlsClient {
  return { cert: leaf?.cert, key: leaf?.key, ca, expect }
}

export interface TlsResponse { status: number, headers: Record<string, string | string[] | undefined>, body: string }

/** One HTTPS request (HTTP/1.1) on a fresh connection. */
export async function tlsRequest (port: number, c: TlsClient, opts: { path?: string, headers?: Record<string, string>, method?: string } = {}): Promise<TlsResponse> {
  return await new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port, path: opts.path ?? '/', method: opts.method ?? 'GET', headers: opts.headers, agent: false,
      ca: c.ca, cert: c.cert, key: c.key, checkServerIdentity: serverCheck(c.expect), ALPNProtocols: ['http/1.1'], timeout: 10_000
    }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (d: Buffer) => chunks.push(d))
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }) })
      res.on('error', reject)
    })
    req.on('timeout', () => { req.destroy(new Error('timed out')) })
    req.on('error', reject)
    req.end()
  })
}

/** One HTTP/2 request over TLS (ALPN h2) on a fresh session. */
export async function h2tlsRequest (port: number, c: TlsClient, opts: { path?: string, headers?: Record<string, string> } = {}): Promise<TlsResponse & { alpn: string | false | undefined }> {
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca: c.ca, cert: c.cert, key: c.key, checkServerIdentity: serverCheck(c.expect) })
  try {
    return await new Promise((resolve, reject) => {
      session.on('error', reject)
      const req = session.request({ ':path': opts.path ?? '/', ...opts.headers })
      let head: http2.IncomingHttpHeaders = {}
      const chunks: Buffer[] = []
      req.on('response', (h) => { head = h })
      req.on('data', (d: Buffer) => chunks.push(d))
      req.on('end', () => { resolve({ status: Number(head[':status']), headers: head as Record<string, string>, body: Buffer.concat(chunks).toString(), alpn: session.alpnProtocol }) })
      req.on('error', reject)
      req.end()
    })
  } finally {
    session.close()
  }
}

/** Whether a TLS handshake and one request succeed: 'ok', or the error's code or message. */
export async function tryTls (port: number, c: TlsClient): Promise<string> {
  try {
    const r = await tlsRequest(port, c)
    return r.status === 200 ? 'ok' : `status ${r.status}`
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? (err as Error).message
  }
}

/** Whether the server closes a plaintext connection without answering: resolves with what it answered ('' = nothing). */
export async function plaintextAnswer (port: number): Promise<string> {
  return await new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    let got = ''
    s.on('data', (d: Buffer) => { got += d.toString() })
    s.on('close', () => { resolve(got) })
    s.on('error', () => {})
    s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n')
    setTimeout(() => { s.destroy() }, 5000).unref()
  })
}

export function spiffeId (pem: string): string {
  return (new X509Certificate(pem).subjectAltName ?? '').replace(/^URI:/, '')
}
