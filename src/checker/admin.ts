// The checker's own admin listener (DOORMAN_ADMIN_PORT): /livez, /readyz (`?verbose` lists every check), /metrics
// and /state. It runs on the checker's event loop, so an answer from /livez also shows the loop is turning.
import http from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type { Checker } from './index.js'
import { render } from '../probe-lane/probes.js'

function send (res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

export class CheckerAdmin {
  readonly server: http.Server
  readonly #checker: Checker

  constructor (checker: Checker) {
    this.#checker = checker
    this.server = http.createServer({ keepAliveTimeout: 5_000, headersTimeout: 5_000, requestTimeout: 10_000 }, (req, res) => {
      void this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `error: ${(err as Error)?.message ?? String(err)}\n`)
        else res.destroy()
      })
    })
  }

  async #handle (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://checker')
    if (req.method !== 'GET' && req.method !== 'HEAD') { send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n'); return }
    const verbose = url.searchParams.has('verbose')
    const c = this.#checker
    switch (url.pathname) {
      case '/livez': {
        const l = c.live()
        if (l.ok && !verbose) { send(res, 200, 'text/plain; charset=utf-8', 'ok'); return }
        const { status, body } = render([{ name: 'rounds', ok: l.ok, detail: l.detail }], true, 'livez')
        send(res, status, 'text/plain; charset=utf-8', body)
        return
      }
      case '/readyz': {
        const r = c.ready()
        if (r.ok && !verbose) { send(res, 200, 'text/plain; charset=utf-8', 'ok'); return }
        // Without ?verbose a failing answer lists the failed checks only.
        const { status, body } = render(verbose ? r.checks : r.checks.filter((k) => !k.ok), true, 'readyz')
        send(res, status, 'text/plain; charset=utf-8', body)
        return
      }
      case '/metrics':
        send(res, 200, c.metrics.registry.contentType, await c.metrics.text())
        return
      case '/state':
        send(res, 200, 'application/json', JSON.stringify(c.state(), null, 2) + '\n')
        return
      default:
        send(res, 404, 'text/plain; charset=utf-8', 'not found: /livez, /readyz, /metrics, /state\n')
    }
  }

  /** Listens; resolves with the bound port. */
  async listen (port: number, host: string): Promise<number> {
    this.server.listen(port, host)
    await once(this.server, 'listening')
    return (this.server.address() as AddressInfo).port
  }

  async close (): Promise<void> {
    this.server.closeAllConnections()
    await new Promise((resolve) => this.server.close(resolve))
  }
}
