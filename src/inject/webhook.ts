// `doorman webhook`: the mutating admission webhook. HTTPS on DOORMAN_WEBHOOK_PORT (POST /mutate for pods that opt
// in, POST /mutate/namespace for namespaces that opted in), the certificate reloaded when its files change; /livez,
// /readyz and /metrics on plain HTTP on DOORMAN_ADMIN_PORT. SIGTERM: not ready at once, then close after the drain
// delay, letting reviews in flight finish.
import https from 'node:https'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import { readFileSync, watchFile, unwatchFile } from 'node:fs'
import { createSecureContext, type SecureContextOptions } from 'node:tls'
import { X509Certificate } from 'node:crypto'
import { once } from 'node:events'
import { Registry, Counter, Histogram, Gauge, collectDefaultMetrics } from 'prom-client'
import { loadConfig, type Config } from '../config/index.js'
import { ConfigError } from '../core/errors.js'
import { createLogger, type Logger } from '../core/log.js'
import { review, newToken } from './admission.js'
import { defaultImage } from './pod.js'

const MAX_BODY = 8 * 1024 * 1024
const RELOAD_POLL_MS = 1000

class WebhookMetrics {
  readonly registry = new Registry()
  readonly reviews = new Counter({ name: 'doorman_webhook_reviews_total', help: 'Admission reviews answered, by outcome (injected, skipped, denied, invalid) and dry run.', labelNames: ['outcome', 'dry_run'], registers: [this.registry] })
  readonly duration = new Histogram({ name: 'doorman_webhook_review_duration_seconds', help: 'Time to answer an admission review.', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5], registers: [this.registry] })
  readonly reloads = new Counter({ name: 'doorman_webhook_certificate_reloads_total', help: 'Certificate reloads after the files changed, by result.', labelNames: ['result'], registers: [this.registry] })
  readonly expiry = new Gauge({ name: 'doorman_webhook_certificate_expiry_timestamp_seconds', help: 'When the serving certificate expires (Unix time).', registers: [this.registry] })
  constructor () { collectDefaultMetrics({ register: this.registry }) }
}

function readPair (cfg: Readonly<Config>): { cert: Buffer, key: Buffer } {
  const read = (file: string, variable: string, what: string): Buffer => {
    try { return readFileSync(file) } catch (err) {
      throw new ConfigError(variable, `${variable}: can't read ${JSON.stringify(file)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); expected a PEM ${what} file`)
    }
  }
  return { cert: read(cfg.webhookCert, 'DOORMAN_WEBHOOK_CERT', 'certificate'), key: read(cfg.webhookKey, 'DOORMAN_WEBHOOK_KEY', 'private key') }
}

function expiresAt (cert: Buffer): number {
  try { return Date.parse(new X509Certificate(cert).validTo) / 1000 } catch { return 0 }
}

async function readBody (req: IncomingMessage): Promise<Buffer | null> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of req) {
    size += (c as Buffer).length
    if (size > MAX_BODY) return null
    chunks.push(c as Buffer)
  }
  return Buffer.concat(chunks)
}

function send (res: ServerResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

export class WebhookServer {
  readonly #cfg: Readonly<Config>
  readonly #log: Logger
  readonly metrics = new WebhookMetrics()
  #https: https.Server | null = null
  #admin: http.Server | null = null
  #ready = false
  #pair: { cert: Buffer, key: Buffer }

  constructor (cfg: Readonly<Config>, log: Logger) {
    this.#cfg = cfg
    this.#log = log
    this.#pair = readPair(cfg)
    createSecureContext(this.#pair as SecureContextOptions)
  }

  async start (): Promise<{ port: number, admin: number }> {
    const cfg = this.#cfg
    const server = https.createServer({ ...this.#pair, requestTimeout: 30_000 }, (req, res) => { void this.#handle(req, res) })
    this.#https = server
    server.on('clientError', (_err, socket) => { socket.destroy() })
    const admin = http.createServer((req, res) => { void this.#handleAdmin(req, res) })
    this.#admin = admin
    server.listen(cfg.webhookPort, cfg.bindHost)
    admin.listen(cfg.adminPort, cfg.bindHost)
    await Promise.all([once(server, 'listening'), once(admin, 'listening')])
    this.metrics.expiry.set(expiresAt(this.#pair.cert))
    watchFile(cfg.webhookCert, { interval: RELOAD_POLL_MS }, () => { this.#reload() })
    watchFile(cfg.webhookKey, { interval: RELOAD_POLL_MS }, () => { this.#reload() })
    this.#ready = true
    const port = (server.address() as { port: number }).port
    const adminPort = (admin.address() as { port: number }).port
    this.#log.info({ port, admin: adminPort, mode: cfg.sidecarMode, image: cfg.sidecarImage !== '' ? cfg.sidecarImage : defaultImage(), defaults: Object.keys(cfg.sidecarEnv), resources: cfg.sidecarResources }, 'doorman webhook listening')
    return { port, admin: adminPort }
  }

  /** Loads the certificate files again; a pair that doesn't load (half-written) keeps the old one until the next change. */
  #reload (): void {
    let pair
    try {
      pair = readPair(this.#cfg)
      createSecureContext(pair as SecureContextOptions)
    } catch (err) {
      this.metrics.reloads.inc({ result: 'error' })
      this.#log.warn({ err }, 'certificate reload failed; keeping the previous certificate')
      return
    }
    if (pair.cert.equals(this.#pair.cert) && pair.key.equals(this.#pair.key)) return
    this.#pair = pair
    this.#https?.setSecureContext(pair)
    this.metrics.reloads.inc({ result: 'ok' })
    this.metrics.expiry.set(expiresAt(pair.cert))
    this.#log.info({ cert: this.#cfg.webhookCert }, 'certificate reloaded')
  }

  async #handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now()
    try {
      const path = (req.url ?? '/').split('?')[0]
      if (path !== '/mutate' && path !== '/mutate/namespace') { send(res, 404, 'not found\n'); return }
      if (req.method !== 'POST') { send(res, 405, 'POST an AdmissionReview\n'); return }
      const body = await readBody(req)
      if (body === null) { send(res, 413, { error: 'the review is larger than 8 MiB' }); return }
      const cfg = this.#cfg
      const r = review(body, {
        mode: cfg.sidecarMode,
        image: cfg.sidecarImage !== '' ? cfg.sidecarImage : defaultImage(),
        env: cfg.sidecarEnv,
        resources: cfg.sidecarResources,
        injectByDefault: path === '/mutate/namespace',
        token: newToken
      })
      this.metrics.reviews.inc({ outcome: r.outcome, dry_run: String(r.dryRun) })
      const level = r.outcome === 'skipped' ? 'debug' : r.outcome === 'injected' ? 'info' : 'warn'
      this.#log[level]({ outcome: r.outcome, dryRun: r.dryRun, detail: r.detail }, 'admission review')
      send(res, r.status, r.body)
    } catch (err) {
      this.#log.error({ err }, 'admission review failed')
      if (!res.headersSent) send(res, 500, { error: 'internal error' })
      else res.destroy()
    } finally {
      this.metrics.duration.observe((performance.now() - started) / 1000)
    }
  }

  async #handleAdmin (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') { send(res, 405, 'method not allowed\n'); return }
    if (path === '/livez') { send(res, 200, 'ok\n'); return }
    if (path === '/readyz') { send(res, this.#ready ? 200 : 503, this.#ready ? 'ok\n' : 'stopping\n'); return }
    if (path === '/metrics') {
      const text = await this.metrics.registry.metrics()
      res.writeHead(200, { 'content-type': this.metrics.registry.contentType })
      res.end(text)
      return
    }
    send(res, 404, 'not found\n')
  }

  /** Not ready at once; after `delayMs` stops accepting and waits for reviews in flight. */
  async stop (delayMs: number): Promise<void> {
    this.#ready = false
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs))
    unwatchFile(this.#cfg.webhookCert)
    unwatchFile(this.#cfg.webhookKey)
    const closing = [this.#https, this.#admin].map(async (s) => {
      if (s === null) return
      const closed = new Promise((resolve) => s.close(resolve))
      s.closeIdleConnections()
      await closed
    })
    await Promise.all(closing)
  }
}

export async function command (_args: string[]): Promise<number> {
  const cfg = loadConfig()
  const log = createLogger(cfg.logLevel).child({ component: 'webhook' })
  const server = new WebhookServer(cfg, log)
  try {
    await server.start()
  } catch (err) {
    log.fatal({ err }, 'doorman webhook could not start')
    await server.stop(0)
    return 1
  }
  await new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      process.off('SIGTERM', onSignal)
      process.off('SIGINT', onSignal)
      log.info({ signal: sig, delayMs: cfg.drainDelay }, 'signal received: stopping')
      resolve()
    }
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
  })
  await server.stop(cfg.drainDelay)
  log.info('doorman webhook stopped')
  return 0
}
