// A consumer that follows Dubbo 2.7/3.x's registry rules (ZookeeperRegistry + RegistryDirectory), written from
// Dubbo's documented registry layout, not from doorman's code:
//  - it registers itself (ephemeral /dubbo/<interface>/consumers/<encoded consumer URL>), creates the persistent
//    category paths it subscribes to, and watches /dubbo/<interface>/providers and /dubbo/<interface>/configurators;
//  - each watch event replaces that category's URLs (an empty category clears it: Dubbo's `empty://`);
//  - a URL counts only when it matches the consumer (UrlUtils.isMatch: interface, category, group, version, and not
//    `enabled=false`);
//  - configurators (`override://`) apply to a provider as AbstractConfigurator does for URLs without
//    `configVersion`: a port given must be the provider's, the host must be the provider's or 0.0.0.0, an
//    `application` given must be the provider's; their parameters then merge into the provider URL;
//  - an invoker exists for a provider whose merged URL has `disabled` false, or no `disabled` and `enabled` not
//    false (RegistryDirectory.toInvokers); a provider gone from the providers listing is dropped;
//  - while ZooKeeper is away it keeps what it last saw.
// Calls go straight to the provider (Dubbo consumers never pass through doorman), over HTTP/1.1 keep-alive.
import http from 'node:http'
import path from 'node:path'
import zookeeper from 'node-zookeeper-client'
import { ROOT, spawnNode, startDoorman, waitFor, type Child, type Doorman } from './index.js'
import type { ZooKeeperServer } from './zookeeper.js'

const { createClient, CreateMode } = zookeeper

/** Java's URLEncoder.encode / URLDecoder.decode, UTF-8. */
export const javaEncode = (s: string): string => encodeURIComponent(s).replace(/[!'()~]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase()).replace(/%20/g, '+')
export const javaDecode = (s: string): string => decodeURIComponent(s.replace(/\+/g, ' '))

export interface Url { protocol: string, host: string, port: number, path: string, params: Record<string, string> }

export function parseUrl (text: string): Url {
  const m = /^(\w+):\/\/([^:/?]*)(?::(\d+))?\/?([^?]*)(?:\?(.*))?$/.exec(text)
  if (m === null) throw new Error(`not a URL: ${text}`)
  const params: Record<string, string> = {}
  for (const kv of (m[5] ?? '').split('&')) {
    if (kv === '') continue
    const i = kv.indexOf('=')
    params[i === -1 ? kv : kv.slice(0, i)] = i === -1 ? kv : kv.slice(i + 1)
  }
  return { protocol: m[1], host: m[2], port: m[3] === undefined ? 0 : Number(m[3]), path: m[4], params }
}

const address = (u: Url): string => `${u.host}:${u.port}`

export interface WatchEvent { at: number, category: 'providers' | 'configurators', urls: string[], invokers: string[] }
export interface Call { to: string | null, start: number, end: number, ok: boolean, error?: string }

export class DubboConsumer {
  readonly events: WatchEvent[] = []
  readonly calls: Call[] = []
  #client: ReturnType<typeof createClient>
  #providers: Url[] = []
  #configurators: Url[] = []
  #invokers: string[] = []
  #agent = new http.Agent({ keepAlive: true })
  #closed = false
  #load: Promise<void>[] = []
  #stopLoad = false
  readonly #consumer: Url

  constructor (readonly connect: string, readonly iface: string, readonly opts: { root?: string, group?: string, version?: string } = {}) {
    this.#client = createClient(connect, { sessionTimeout: 60_000, spinDelay: 500, retries: 1 })
    const params: Record<string, string> = { application: 'demo-consumer', category: 'providers,configurators,routers', interface: iface, side: 'consumer', timestamp: String(Date.now()) }
    if (opts.group !== undefined) params.group = opts.group
    if (opts.version !== undefined) params.version = opts.version
    this.#consumer = { protocol: 'consumer', host: '127.0.0.1', port: 0, path: iface, params }
  }

  get #root (): string { return this.opts.root ?? '/dubbo' }

  /** The providers it would call now. */
  get invokers (): string[] { return this.#invokers }

  async start (): Promise<void> {
    const c = this.#client
    await new Promise<void>((resolve) => { c.once('connected', () => { resolve() }); c.connect() })
    const base = `${this.#root}/${this.iface}`
    for (const cat of ['providers', 'configurators', 'routers', 'consumers']) await this.#op<string>((cb) => { c.mkdirp(`${base}/${cat}`, cb) })
    const q = Object.keys(this.#consumer.params).sort().map((k) => `${k}=${this.#consumer.params[k]}`).join('&')
    await this.#op<string>((cb) => { c.create(`${base}/consumers/${javaEncode(`consumer://127.0.0.1/${this.iface}?${q}`)}`, CreateMode.EPHEMERAL, cb) })
    await Promise.all([this.#watch('providers'), this.#watch('configurators')])
  }

  async #op<T> (fn: (cb: (err: unknown, v: T) => void) => void): Promise<T> {
    return await new Promise((resolve, reject) => { fn((err, v) => { if (err !== null && err !== undefined) reject(err); else resolve(v) }) })
  }

  async #watch (category: 'providers' | 'configurators'): Promise<void> {
    if (this.#closed) return
    const path = `${this.#root}/${this.iface}/${category}`
    const children = await this.#op<string[]>((cb) => {
      this.#client.getChildren(path, () => { this.#watch(category).catch(() => {}) }, cb)
    }).catch(() => null)
    // A failed listing (ZooKeeper away) changes nothing: what was last seen is kept.
    if (children === null) return
    const urls = children.map(javaDecode).map(parseUrl).filter((u) => this.#matches(u, category))
    if (category === 'providers') this.#providers = urls
    else this.#configurators = urls
    this.#refresh()
    this.events.push({ at: Date.now(), category, urls: urls.map((u) => `${u.protocol}://${address(u)}`), invokers: [...this.#invokers] })
  }

  /** UrlUtils.isMatch(consumerUrl, url). */
  #matches (u: Url, category: string): boolean {
    const iface = u.params.interface ?? u.path
    if (iface !== this.iface && iface !== '*') return false
    const cat = u.params.category ?? (u.protocol === 'override' ? 'configurators' : 'providers')
    if (cat !== category) return false
    if (u.params.enabled === 'false') return false
    const c = this.#consumer.params
    if (c.group !== undefined && c.group !== '*' && c.group !== u.params.group) return false
    if (c.version !== undefined && c.version !== '*' && c.version !== u.params.version) return false
    return true
  }

  /** Configurators onto providers (AbstractConfigurator, pre-2.7 override URLs), then toInvokers. */
  #refresh (): void {
    const conditionKeys = new Set(['category', 'check', 'dynamic', 'enabled', 'group', 'version', 'application', 'side', 'configVersion', 'compatible_config'])
    this.#invokers = this.#providers.flatMap((p) => {
      const params = { ...p.params }
      for (const o of this.#configurators) {
        if (o.port !== 0 && o.port !== p.port) continue
        if (o.host !== '0.0.0.0' && o.host !== p.host) continue
        if (o.params.application !== undefined && o.params.application !== '*' && o.params.application !== p.params.application) continue
        for (const [k, v] of Object.entries(o.params)) if (!conditionKeys.has(k) && !k.startsWith('~')) params[k] = v
      }
      const enabled = params.disabled !== undefined ? params.disabled !== 'true' : params.enabled !== 'false'
      return enabled ? [address(p)] : []
    })
  }

  /** One call to a provider picked at random among the invokers; no invoker is Dubbo's "No provider available". */
  async call (): Promise<Call> {
    const start = Date.now()
    const list = this.#invokers
    if (list.length === 0) return this.#record({ to: null, start, end: start, ok: false, error: 'no provider available' })
    const to = list[Math.floor(Math.random() * list.length)]
    const [host, port] = to.split(':')
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request({ host, port: Number(port), path: `/${this.iface}/sayHello`, agent: this.#agent, timeout: 5000 }, (res) => {
          res.resume()
          res.on('end', () => { resolve(res.statusCode ?? 0) })
          res.on('error', reject)
        })
        req.on('timeout', () => { req.destroy(new Error('timeout')) })
        req.on('error', reject)
        req.end()
      })
      return this.#record({ to, start, end: Date.now(), ok: status === 200, error: status === 200 ? undefined : `status ${status}` })
    } catch (err) {
      return this.#record({ to, start, end: Date.now(), ok: false, error: String(err) })
    }
  }

  #record (c: Call): Call { this.calls.push(c); return c }

  /** Keeps `workers` callers going, each waiting `pauseMs` between its calls, until stopLoad. */
  startLoad (workers = 4, pauseMs = 20): void {
    this.#stopLoad = false
    for (let i = 0; i < workers; i++) {
      this.#load.push((async () => {
        while (!this.#stopLoad) {
          await this.call()
          await new Promise((resolve) => setTimeout(resolve, pauseMs))
        }
      })())
    }
  }

  async stopLoad (): Promise<void> {
    this.#stopLoad = true
    await Promise.all(this.#load)
    this.#load = []
  }

  async close (): Promise<void> {
    this.#closed = true
    await this.stopLoad()
    this.#agent.destroy()
    this.#client.close()
  }
}

// --- pods: a provider process (test/helpers/dubbo-provider.mjs) and a doorman in front of it ---

export const IFACE = 'org.apache.dubbo.demo.DemoService'
/** The provider script. */
const PROVIDER = path.join(ROOT, 'test', 'helpers', 'dubbo-provider.mjs')

interface Tap { teardown: (fn: () => unknown) => void }

export interface Provider extends Child { port: number, registered: () => { registered: number, urls: string[] } | null }

/** Starts a provider (killed in teardown); env as dubbo-provider.mjs reads it. */
export async function startProvider (t: Tap, zk: ZooKeeperServer, env: Record<string, string> = {}): Promise<Provider> {
  const child = spawnNode(t, [PROVIDER], { ZK: zk.connect, INTERFACES: IFACE, ...env })
  const line = <T>(key: string): T | null => {
    for (const l of child.output().split('\n')) {
      if (!l.startsWith('{')) continue
      try { const o = JSON.parse(l) as Record<string, unknown>; if (key in o) return o as T } catch {}
    }
    return null
  }
  const port = (await waitFor('the provider to listen', () => line<{ port: number }>('port'), 10_000)).port
  return { ...child, port, registered: () => line('registered') }
}

/** A doorman in front of a provider, with DOORMAN_APP_REGISTRY and a short drain. */
export async function startSidecar (t: Tap, zk: ZooKeeperServer, p: Provider, env: Record<string, string> = {}, waitReady = true): Promise<Doorman> {
  return await startDoorman(t, {
    DOORMAN_APP_PORT: String(p.port),
    DOORMAN_APP_REGISTRY: zk.url,
    DOORMAN_APP_SERVICES: IFACE,
    DOORMAN_DRAIN_DELAY: '1s',
    DOORMAN_DRAIN_QUIET: '200ms',
    DOORMAN_DRAIN_TIMEOUT: '5s',
    ...env
  }, { waitReady })
}
