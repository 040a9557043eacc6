// Data sources of the checker. Two interfaces, each replaceable:
//
// - a read source of targets outside the registry (TargetSource): services with their cluster, `org` and `env`
//   labels, their instances as `host:port`, and each service's check definition. The one built in is the targets
//   file, DOORMAN_CHECK_TARGETS (TargetsFile, below);
// - the registry itself (src/registry/types.ts `Registry`, read through the Dispatcher's watches, and written through
//   the Coordinator's eject and recover): read + write, as for every sidecar.
//
// The checker publishes the targets of a read source into the registry (publisher.ts), so from there on they are
// instances like any other: consumers balance over them, the checker probes and ejects them, `doorman instances`
// lists them.
import { promises as fsp } from 'node:fs'
import { isIP } from 'node:net'
import { parse as parseYaml } from 'yaml'
import { LABEL, SERVICE_NAME } from '../registry/types.js'
import { checkFromObject, CheckSpecError, type CheckSpec } from './spec.js'

/** One service of a read source, in one cluster. */
export interface SourceService {
  name: string
  cluster: string
  org: string
  env: string
  check: CheckSpec
  /** `host:port` each (IPv6 hosts in brackets), sorted, no duplicates. */
  instances: readonly string[]
}

export interface TargetSet {
  services: readonly SourceService[]
  /** Grows with every accepted change. */
  version: number
}

/** A read source of targets outside the registry. */
export interface TargetSource {
  /** For logs and /state. */
  readonly name: string
  /** The targets now, reloaded if the source changed. Never throws: a bad change is refused, the last good set kept. */
  refresh: () => Promise<TargetSet>
  /** Why the last change was refused (null while the source is good). */
  readonly error: string | null
  /** The set in force (as of the last refresh). */
  readonly current: TargetSet
}

export class TargetsError extends Error {}

const ADDRESS = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/

/** Parses and checks a targets file's text (YAML). Throws TargetsError naming the place of the first mistake. */
export function parseTargets (text: string): SourceService[] {
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (err) {
    throw new TargetsError(`not YAML: ${(err as Error).message.split('\n')[0]}`)
  }
  if (doc === null || doc === undefined) return []
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new TargetsError('expected a map with a `services:` list')
  for (const k of Object.keys(doc)) if (k !== 'services') throw new TargetsError(`${k}: unknown key (expected services)`)
  const list = (doc as { services?: unknown }).services ?? []
  if (!Array.isArray(list)) throw new TargetsError('services: expected a list')
  const out: SourceService[] = []
  const seen = new Set<string>()
  for (const [i, raw] of list.entries()) {
    const where = `services[${i}]`
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new TargetsError(`${where}: expected a map (name, cluster, org, env, check, instances)`)
    const o = raw as Record<string, unknown>
    for (const k of Object.keys(o)) if (!['name', 'cluster', 'org', 'env', 'check', 'instances'].includes(k)) throw new TargetsError(`${where}.${k}: unknown key`)
    const name = o.name
    if (typeof name !== 'string' || !SERVICE_NAME.test(name)) throw new TargetsError(`${where}.name: got ${JSON.stringify(name)}; expected a service name (lower-case letters, digits, '.', '-', '_')`)
    const cluster = o.cluster ?? 'default'
    if (typeof cluster !== 'string' || !/^[^\s/]{1,253}$/.test(cluster)) throw new TargetsError(`${where}.cluster: got ${JSON.stringify(cluster)}; expected a cluster name`)
    const label = (k: 'org' | 'env'): string => {
      const v = o[k] ?? ''
      if (typeof v !== 'string' || (v !== '' && !LABEL.test(v))) throw new TargetsError(`${where}.${k}: got ${JSON.stringify(v)}; expected a name of lower-case letters, digits, '.', '_', '-'`)
      return v
    }
    const org = label('org')
    const env = label('env')
    let check: CheckSpec
    try {
      check = checkFromObject(o.check ?? { type: 'tcp' }, `${where}.check`)
    } catch (err) {
      if (err instanceof CheckSpecError) throw new TargetsError(err.message)
      throw err
    }
    const key = `${name}/${cluster}`
    if (seen.has(key)) throw new TargetsError(`${where}: ${name} in cluster ${cluster} is listed twice`)
    seen.add(key)
    if (!Array.isArray(o.instances)) throw new TargetsError(`${where}.instances: expected a list of host:port`)
    const instances = new Set<string>()
    for (const [j, a] of o.instances.entries()) {
      const m = typeof a === 'string' ? ADDRESS.exec(a.trim()) : null
      const p = m === null ? 0 : Number(m[2])
      if (m === null || p < 1 || p > 65535) throw new TargetsError(`${where}.instances[${j}]: got ${JSON.stringify(a)}; expected host:port (an IPv6 host in brackets)`)
      const addr = (a as string).trim()
      if (check.type === 'grpc' && check.tls !== undefined && isIP(m[1].replace(/^\[|\]$/g, '')) !== 0) throw new TargetsError(`${where}.instances[${j}]: got ${JSON.stringify(a)}; a grpc check over TLS needs a host name, not an IP address (gRPC's client sends the host as the TLS server name, where an IP address is not allowed)`)
      if (instances.has(addr)) throw new TargetsError(`${where}.instances[${j}]: ${addr} is listed twice`)
      instances.add(addr)
    }
    out.push({ name, cluster, org, env, check, instances: [...instances].sort() })
  }
  return out
}

export interface TargetsFileOptions {
  path: string
  /** Told once per refused change (and once when the file is good again). */
  onError?: (message: string) => void
  onLoad?: (set: TargetSet) => void
}

/**
 * DOORMAN_CHECK_TARGETS: a YAML file, looked at every round (a stat; read and parsed only when it changed), so an edit
 * takes effect at the next round without a restart. A change that does not parse or check is refused: the last good
 * set stays in force and `error` says why, until the file is good again.
 */
export class TargetsFile implements TargetSource {
  readonly name: string
  readonly #o: TargetsFileOptions
  #set: TargetSet = { services: [], version: 0 }
  #stat = ''
  #text: string | null = null
  #error: string | null = null
  /** Refused changes since start. */
  refused = 0

  constructor (opts: TargetsFileOptions) {
    this.#o = opts
    this.name = `file:${opts.path}`
  }

  get error (): string | null { return this.#error }
  get current (): TargetSet { return this.#set }

  /** The first load: throws TargetsError when the file is missing or bad (the checker does not start with it). */
  async load (): Promise<TargetSet> {
    let text: string
    try {
      text = await fsp.readFile(this.#o.path, 'utf8')
    } catch (err) {
      throw new TargetsError(`cannot read ${this.#o.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    const services = parseTargets(text)
    this.#text = text
    this.#set = { services, version: 1 }
    this.#stat = await this.#statKey()
    this.#o.onLoad?.(this.#set)
    return this.#set
  }

  async #statKey (): Promise<string> {
    const st = await fsp.stat(this.#o.path)
    return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`
  }

  async refresh (): Promise<TargetSet> {
    let key: string
    try {
      key = await this.#statKey()
    } catch (err) {
      this.#refuse(`cannot read ${this.#o.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, '')
      return this.#set
    }
    if (key === this.#stat) return this.#set
    let text: string
    try {
      text = await fsp.readFile(this.#o.path, 'utf8')
    } catch (err) {
      this.#refuse(`cannot read ${this.#o.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, '')
      return this.#set
    }
    this.#stat = key
    if (text === this.#text) return this.#set
    this.#text = text
    let services: SourceService[]
    try {
      services = parseTargets(text)
    } catch (err) {
      this.#refuse((err as Error).message, key)
      return this.#set
    }
    this.#error = null
    this.#set = { services, version: this.#set.version + 1 }
    this.#o.onLoad?.(this.#set)
    return this.#set
  }

  #refuse (message: string, key: string): void {
    this.#stat = key
    if (this.#error === message) return
    this.refused++
    this.#error = message
    this.#o.onError?.(message)
  }
}
