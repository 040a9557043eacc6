// Dubbo on ZooKeeper (`zookeeper://host:2181[,host2:2181…]/dubbo`). Dubbo 2.7 and 3.x (interface-level
// registration) keep one ephemeral znode per provider under the app's own session:
//   /dubbo/<interface>/providers/<URL.encode("dubbo://<ip>:<port>/<interface>?…&timestamp=…&warmup=…")>
// and consumers watch /dubbo/<interface>/providers and /dubbo/<interface>/configurators. doorman only reads the
// providers whose host and port are this pod's, and writes one override per interface at drain start:
//   /dubbo/<interface>/configurators/<URL.encode("override://<ip>:<port>/<interface>?category=configurators&disabled=true&…")>
// as an ephemeral znode of its own session, so it can never outlive doorman and disable a later pod that gets the
// same address.
import zookeeper from 'node-zookeeper-client'
import type { Logger } from '../core/log.js'
import type { AppEntry, AppRegistry, AppRegistryStatus } from './types.js'
import { javaDecode, javaEncode, parseDubboUrl, disableOverride } from './dubbo-url.js'
import type { ZooKeeperTarget } from './url.js'

const { createClient, CreateMode, Exception, State } = zookeeper

export interface ZooKeeperOptions {
  target: ZooKeeperTarget
  /** This pod's address, as the app registers it. */
  host: string
  /** The app's port (its Dubbo port unless the URL names another). */
  port: number
  /** Interfaces to watch; empty: every interface under the root. */
  services: readonly string[]
  log: Logger
  sessionTimeout?: number
}

type Client = ReturnType<typeof createClient>

/**
 * How long a server may hold an open connection without answering the session handshake before doorman drops it and
 * the client tries again. node-zookeeper-client bounds the TCP connect only; a server restarting can accept the
 * connection and never answer, and the client then waits for ever (the Java client's read timeout covers this).
 */
export const HANDSHAKE_MS = 5000

/** node-zookeeper-client's connection state while it waits for the handshake (ConnectionManager.STATES.CONNECTING). */
const CONNECTING = 1

/** The client's connection, where the watchdog looks (not in the published types). */
interface Connection { state?: number, socket?: { connecting?: boolean, destroyed?: boolean, destroy: () => void } }

const isCode = (err: unknown, code: number): boolean => typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code

/** The interfaces this instance's address has registered, read from one providers listing. */
export function ownEntries (service: string, children: readonly string[], host: string, port: number): AppEntry[] {
  const out: AppEntry[] = []
  for (const child of children) {
    const text = javaDecode(child)
    if (text === null) continue
    const u = parseDubboUrl(text)
    if (u === null || u.host !== host || u.port !== port) continue
    const num = (k: string): number => { const n = Number(u.params.get(k) ?? ''); return Number.isFinite(n) && n > 0 ? n : 0 }
    out.push({ service, url: text, timestamp: num('timestamp'), warmup: num('warmup') })
  }
  return out
}

export class ZooKeeperAppRegistry implements AppRegistry {
  readonly kind = 'zookeeper'
  readonly #o: ZooKeeperOptions
  readonly #port: number
  #client: Client | null = null
  #up = false
  #closed = false
  #onChange: () => void = () => {}
  /** Interfaces being watched, and the entries found under each. */
  readonly #entries = new Map<string, AppEntry[]>()
  /** Overrides written (znode path), while disabled. */
  readonly #overrides = new Set<string>()
  #disabled = false
  #writer: Promise<void> | null = null
  #again = false
  /** A watcher per path, so a path is never watched twice. */
  readonly #watchers = new Map<string, (e: unknown) => void>()
  #watchdog: NodeJS.Timeout | null = null

  constructor (o: ZooKeeperOptions) {
    this.#o = o
    this.#port = o.target.port ?? o.port
  }

  start (onChange: () => void): void {
    this.#onChange = onChange
    this.#connect()
    this.#watchdog = setInterval(() => { this.#checkHandshake() }, 1000)
    this.#watchdog.unref()
  }

  #stuckSocket: unknown = null
  #stuckSince = 0

  /** Drops a connection whose handshake has gone unanswered for HANDSHAKE_MS; the client then connects again. */
  #checkHandshake (): void {
    const m = (this.#client as unknown as { connectionManager?: Connection } | null)?.connectionManager
    const socket = m?.socket
    if (this.#up || m?.state !== CONNECTING || socket === undefined || socket.connecting === true || socket.destroyed === true) {
      this.#stuckSocket = null
      return
    }
    if (socket !== this.#stuckSocket) {
      this.#stuckSocket = socket
      this.#stuckSince = Date.now()
    } else if (Date.now() - this.#stuckSince >= HANDSHAKE_MS) {
      this.#o.log.warn({ afterMs: Date.now() - this.#stuckSince }, 'the app registry accepted the connection but did not answer the handshake; connecting again')
      this.#stuckSocket = null
      socket.destroy()
    }
  }

  #connect (): void {
    if (this.#closed) return
    const client = createClient(this.#o.target.connect, { sessionTimeout: this.#o.sessionTimeout ?? 30_000, spinDelay: 1000, retries: 1 })
    this.#client = client
    this.#watchers.clear()
    client.on('state', (state) => {
      if (client !== this.#client) return
      if (state === State.SYNC_CONNECTED || state === State.CONNECTED_READ_ONLY) {
        if (!this.#up) this.#o.log.info({ registry: this.#o.target.connect }, 'app registry connected')
        this.#up = true
        this.#scan()
      } else if (state === State.DISCONNECTED) {
        if (this.#up) this.#o.log.warn({ registry: this.#o.target.connect }, 'app registry disconnected; what it last showed is kept')
        this.#up = false
      } else if (state === State.EXPIRED) {
        this.#o.log.warn('app registry session expired; reconnecting with a new one')
        this.#up = false
        client.close()
        this.#overrides.clear()
        this.#connect()
        this.#needsWrite()
      }
      this.#onChange()
    })
    client.connect()
  }

  /**
   * Lists the watched interfaces: all of them on each connect (watches set while away may have missed changes); on
   * a change of the root's children (no declared services), only the interfaces not seen before.
   */
  #scan (full = true): void {
    if (this.#o.services.length > 0) {
      for (const s of this.#o.services) this.#list(s)
      return
    }
    const root = this.#o.target.root
    this.#call((c, done) => { c.getChildren(root, this.#watcher(root, () => { this.#scan(false) }), done) }, (children: string[]) => {
      for (const s of children) if (full || !this.#entries.has(s)) this.#list(s)
    }, () => {
      // No root yet: learn when it appears. It may have appeared since the listing failed (a registration creates
      // the whole path at once): then the watch set is not the one wanted, so list again.
      this.#call((c, done) => { c.exists(root, this.#watcher(root + '#exists', () => { this.#scan() }), done) }, (stat) => { if (stat != null) this.#scan() })
    })
  }

  #providers (service: string): string { return `${this.#o.target.root}/${service}/providers` }

  /** Lists one interface's providers and keeps watching them. */
  #list (service: string): void {
    const path = this.#providers(service)
    this.#call((c, done) => { c.getChildren(path, this.#watcher(path, () => { this.#list(service) }), done) }, (children: string[]) => {
      this.#set(service, ownEntries(service, children, this.#o.host, this.#port))
    }, () => {
      this.#set(service, [])
      // As for the root: created in between, its children are listed (and watched) now.
      this.#call((c, done) => { c.exists(path, this.#watcher(path + '#exists', () => { this.#list(service) }), done) }, (stat) => { if (stat != null) this.#list(service) })
    })
  }

  #set (service: string, entries: AppEntry[]): void {
    const before = JSON.stringify(this.#entries.get(service) ?? [])
    this.#entries.set(service, entries)
    if (entries.length > 0) this.#needsWrite()
    if (JSON.stringify(entries) !== before) this.#onChange()
  }

  #watcher (key: string, fn: () => void): (e: unknown) => void {
    let w = this.#watchers.get(key)
    if (w === undefined) {
      w = () => { if (!this.#closed) fn() }
      this.#watchers.set(key, w)
    }
    return w
  }

  /**
   * One client call. `noNode` handles NO_NODE; connection losses are retried by the next connect's scan; other
   * errors are logged.
   */
  #call<T> (op: (c: Client, done: (err: unknown, v: T) => void) => void, ok: (v: T) => void, noNode?: () => void): void {
    const c = this.#client
    if (c === null || this.#closed) return
    op(c, (err, v) => {
      if (this.#closed || c !== this.#client) return
      if (err === null || err === undefined) { ok(v); return }
      if (isCode(err, Exception.NO_NODE) && noNode !== undefined) { noNode(); return }
      if (isCode(err, Exception.CONNECTION_LOSS) || isCode(err, Exception.SESSION_EXPIRED)) return
      this.#o.log.warn({ err }, 'app registry call failed')
    })
  }

  status (): AppRegistryStatus {
    const entries = [...this.#entries.values()].flat().sort((a, b) => a.service < b.service ? -1 : 1)
    return { kind: this.kind, up: this.#up, entries, disabled: this.#disabled }
  }

  disable (): Promise<void> {
    this.#disabled = true
    this.#needsWrite()
    return this.#writer ?? Promise.resolve()
  }

  /** Writes the overrides missing, once at a time: a call while a pass runs asks for one more pass after it. */
  #needsWrite (): void {
    if (!this.#disabled || this.#closed) return
    if (this.#writer !== null) { this.#again = true; return }
    this.#writer = this.#writeOverrides().finally(() => {
      this.#writer = null
      if (this.#again) { this.#again = false; this.#needsWrite() }
    })
  }

  /** Writes an override for every registered interface not yet covered; retries until written or closed. */
  async #writeOverrides (): Promise<void> {
    for (let attempt = 0; !this.#closed; attempt++) {
      const c = this.#client
      const wanted = [...this.#entries.values()].flat().map((e) => ({ e, u: parseDubboUrl(e.url) }))
      let failed = false
      for (const { e, u } of wanted) {
        if (u === null) continue
        const node = `${this.#o.target.root}/${e.service}/configurators/${javaEncode(disableOverride(u))}`
        if (this.#overrides.has(node) || c === null) continue
        try {
          await new Promise<void>((resolve, reject) => {
            c.mkdirp(`${this.#o.target.root}/${e.service}/configurators`, (err) => {
              if (err !== null && err !== undefined) { reject(err); return }
              c.create(node, CreateMode.EPHEMERAL, (err2) => { if (err2 !== null && err2 !== undefined && !isCode(err2, Exception.NODE_EXISTS)) reject(err2); else resolve() })
            })
          })
          this.#overrides.add(node)
          this.#o.log.info({ service: e.service, override: javaDecode(node.slice(node.lastIndexOf('/') + 1)) }, 'disabled for the app\'s consumers')
        } catch (err) {
          failed = true
          if (attempt === 0) this.#o.log.warn({ err, service: e.service }, 'could not write the override yet; retrying')
        }
      }
      if (!failed) { this.#onChange(); return }
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
  }

  async close (waitGoneMs = 0): Promise<void> {
    if (this.#closed) return
    if (this.#disabled && waitGoneMs > 0) {
      const deadline = Date.now() + waitGoneMs
      while (Date.now() < deadline && this.status().entries.length > 0) await new Promise((resolve) => setTimeout(resolve, 50))
    }
    this.#closed = true
    if (this.#watchdog !== null) clearInterval(this.#watchdog)
    const c = this.#client
    this.#client = null
    this.#up = false
    c?.close()
  }
}
