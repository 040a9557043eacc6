// The workload's certificate from files (cert-manager csi-driver-spiffe's layout: tls.crt, tls.key, ca.crt), kept
// fresh without a restart. The directory is watched (and read again every second as a safety net: a watch can miss
// events, on some volumes it gets none); csi drivers and Secret volumes swap the files atomically through a `..data`
// symlink, plain writes are seen too. A pair is taken only when it parses, the key matches the certificate and the
// certificate carries a SPIFFE ID; a half-written or mismatched pair is refused with a log line and the last good pair
// stays in use. Validity is judged against the clock on every reading, so a certificate that runs out while in use
// makes the sidecar not ready.
import fs from 'node:fs'
import path from 'node:path'
import tls from 'node:tls'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import type { Logger } from '../core/log.js'
import { spiffeIdOf } from './spiffe.js'

import type { TlsProblem } from './problems.js'
export { TLS_PROBLEMS, type TlsProblem } from './problems.js'

export const TLS_FILES = { cert: 'tls.crt', key: 'tls.key', ca: 'ca.crt' } as const

/** A loaded key pair and trust bundle. */
export interface KeyPair {
  /** The workload's SPIFFE ID (the certificate's URI SAN). */
  readonly id: string
  readonly cert: X509Certificate
  /** PEM text as read: for TLS contexts (inbound server, outbound agents). */
  readonly pem: { readonly cert: string, readonly key: string, readonly ca: string }
  readonly notBefore: number
  readonly notAfter: number
  /** A secure context built from the pair and bundle (TLS 1.2 at least). */
  readonly context: tls.SecureContext
  /** A serial, bumped with every pair taken: an agent built for an older pair is out of date. */
  readonly generation: number
}

export interface TlsStatus {
  problem: TlsProblem | null
  detail: string
}

export interface CertStoreOptions {
  dir: string
  log: Logger
  /** Milliseconds since the epoch (tests move the clock). */
  now?: () => number
  /** How often the files are read again without a watch event (default 1 s). */
  pollMs?: number
}

export const MIN_TLS_VERSION = 'TLSv1.2'

type Loaded = { ok: true, pair: Omit<KeyPair, 'generation'> } | { ok: false, problem: TlsProblem, detail: string }

/** Parses and checks the three files' text into a key pair, or says why not. Pure but for the crypto. */
export function parsePair (certPem: string, keyPem: string, caPem: string): Loaded {
  let cert: X509Certificate
  try { cert = new X509Certificate(certPem) } catch (err) { return { ok: false, problem: 'unreadable', detail: `${TLS_FILES.cert} is not a PEM certificate (${(err as Error).message})` } }
  try { new X509Certificate(caPem) } catch (err) { return { ok: false, problem: 'bad-ca', detail: `${TLS_FILES.ca} is not a PEM certificate bundle (${(err as Error).message})` } }
  let matches: boolean
  try { matches = cert.checkPrivateKey(createPrivateKey(keyPem)) } catch (err) { return { ok: false, problem: 'unreadable', detail: `${TLS_FILES.key} is not a PEM private key (${(err as Error).message})` } }
  if (!matches) return { ok: false, problem: 'key-mismatch', detail: `${TLS_FILES.key} does not match ${TLS_FILES.cert}` }
  const id = spiffeIdOf(cert)
  if (id === null) return { ok: false, problem: 'no-spiffe-id', detail: `${TLS_FILES.cert} carries no SPIFFE ID (one URI SAN spiffe://<trust-domain>/…)` }
  let context: tls.SecureContext
  try {
    context = tls.createSecureContext({ cert: certPem, key: keyPem, ca: caPem, minVersion: MIN_TLS_VERSION })
  } catch (err) {
    return { ok: false, problem: 'unreadable', detail: `the key pair or bundle was refused by TLS (${(err as Error).message})` }
  }
  return { ok: true, pair: { id, cert, pem: { cert: certPem, key: keyPem, ca: caPem }, notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo), context } }
}

/** Whether a pair is within its validity at `now`. */
export function validity (pair: Pick<KeyPair, 'notBefore' | 'notAfter'>, now: number): TlsProblem | null {
  if (now < pair.notBefore) return 'not-yet-valid'
  if (now >= pair.notAfter) return 'expired'
  return null
}

export class CertStore {
  readonly dir: string
  /** Pairs taken and refused since start. */
  readonly reloads = { ok: 0, refused: 0 }
  readonly #log: Logger
  readonly #now: () => number
  readonly #pollMs: number
  #current: KeyPair | null = null
  #lastFailure: TlsStatus = { problem: 'missing', detail: 'not read yet' }
  /** The three files' text as last read ('' before any read): unchanged text is not parsed again. */
  #lastText = ''
  #generation = 0
  #watcher: fs.FSWatcher | null = null
  #poll: NodeJS.Timeout | null = null
  #debounce: NodeJS.Timeout | null = null
  #listeners: Array<(pair: KeyPair) => void> = []
  #closed = false

  constructor (opts: CertStoreOptions) {
    this.dir = opts.dir
    this.#log = opts.log
    this.#now = opts.now ?? Date.now
    this.#pollMs = opts.pollMs ?? 1000
  }

  /** Reads the files once, then watches them. */
  start (): void {
    this.check()
    try {
      this.#watcher = fs.watch(this.dir, { persistent: false }, () => { this.#soon() })
      this.#watcher.on('error', () => { this.#watcher?.close(); this.#watcher = null })
    } catch {
      // No directory yet (the volume not mounted): the poll finds the files when they come.
    }
    this.#poll = setInterval(() => { this.check() }, this.#pollMs)
    this.#poll.unref()
  }

  close (): void {
    this.#closed = true
    this.#watcher?.close()
    this.#watcher = null
    if (this.#poll !== null) clearInterval(this.#poll)
    if (this.#debounce !== null) clearTimeout(this.#debounce)
  }

  /** The pair in use (the last good one), or null when none was ever taken. */
  get current (): KeyPair | null { return this.#current }

  /** Called with every pair taken after the first (a rotation). */
  onChange (fn: (pair: KeyPair) => void): void { this.#listeners.push(fn) }

  /** Whether the pair in use is usable now, and if not why. */
  status (now = this.#now()): TlsStatus {
    const cur = this.#current
    if (cur === null) return this.#lastFailure
    const p = validity(cur, now)
    if (p === null) return { problem: null, detail: `${cur.id}, valid until ${new Date(cur.notAfter).toISOString()}` }
    return { problem: p, detail: p === 'expired' ? `the certificate of ${cur.id} ran out at ${new Date(cur.notAfter).toISOString()}` : `the certificate of ${cur.id} is valid only from ${new Date(cur.notBefore).toISOString()}` }
  }

  /** Seconds until the pair in use runs out (negative once it has); undefined with none. */
  expiresIn (now = this.#now()): number | undefined {
    return this.#current === null ? undefined : (this.#current.notAfter - now) / 1000
  }

  #soon (): void {
    if (this.#closed || this.#debounce !== null) return
    // The files of one swap change together: read them once the burst of events is over.
    this.#debounce = setTimeout(() => { this.#debounce = null; this.check() }, 50)
    this.#debounce.unref()
  }

  /** Reads the files; takes the pair when the text changed and it is good. Returns whether a new pair was taken. */
  check (): boolean {
    if (this.#closed) return false
    let text: [string, string, string]
    try {
      text = [read(this.dir, TLS_FILES.cert), read(this.dir, TLS_FILES.key), read(this.dir, TLS_FILES.ca)]
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      this.#fail(code === 'ENOENT' ? 'missing' : 'unreadable', `${this.dir}: ${(err as Error).message}`)
      return false
    }
    const joined = text.join('\0')
    if (joined === this.#lastText) return false
    this.#lastText = joined
    const r = parsePair(...text)
    if (!r.ok) { this.#fail(r.problem, r.detail); return false }
    const now = this.#now()
    const cur = this.#current
    const p = validity(r.pair, now)
    // A pair outside its validity never replaces one within it.
    if (p !== null && cur !== null && validity(cur, now) === null) {
      this.#fail(p, `the new certificate of ${r.pair.id} is ${p} (valid ${new Date(r.pair.notBefore).toISOString()} to ${new Date(r.pair.notAfter).toISOString()})`)
      return false
    }
    const pair: KeyPair = { ...r.pair, generation: ++this.#generation }
    this.#current = pair
    this.reloads.ok++
    this.#log.info({ id: pair.id, notAfter: new Date(pair.notAfter).toISOString(), generation: pair.generation }, cur === null ? 'certificate loaded' : 'certificate rotated')
    if (p !== null) this.#log.warn({ id: pair.id, problem: p }, 'the certificate in use is not valid now')
    if (cur !== null) for (const fn of this.#listeners) fn(pair)
    return true
  }

  #fail (problem: TlsProblem, detail: string): void {
    const same = this.#lastFailure.problem === problem && this.#lastFailure.detail === detail
    this.#lastFailure = { problem, detail }
    if (same) return
    this.reloads.refused++
    if (this.#current !== null) this.#log.warn({ problem, detail, keeping: this.#current.id }, 'certificate files refused; the last good pair stays in use')
    else this.#log.warn({ problem, detail }, 'no usable certificate')
    // A swap seen half-way is read again shortly.
    this.#lastText = ''
  }
}

function read (dir: string, name: string): string {
  return fs.readFileSync(path.join(dir, name), 'utf8')
}
