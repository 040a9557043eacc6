// DOORMAN_REGISTRY URLs → where the registry lives and how ioredis connects to it.
//
//   redis://[user:password@]host[:port][/db][?options]
//   rediss://…                                          (TLS)
//   redis+sentinel://[user:password@]host[:port][,host[:port]…]/master[/db][?options]
//   redis+cluster://[user:password@]host[:port][,host[:port]…][?options]
//
// options: prefix=<key prefix> (default doorman), tls=1 (sentinel, cluster), sentinelUsername, sentinelPassword,
// sentinelTls=1, name=<master> (sentinel, instead of the path). Bad URLs throw ConfigError naming DOORMAN_REGISTRY,
// never echoing the password.
import { ConfigError } from '../core/errors.js'

export interface HostPort { host: string, port: number }

interface Common {
  username?: string
  password?: string
  /** Key prefix; keys are `<prefix>:{<service>}:…`. */
  prefix: string
  tls: boolean
}

export type RedisTarget =
  | Common & { mode: 'standalone', host: string, port: number, db: number }
  | Common & { mode: 'sentinel', sentinels: HostPort[], name: string, db: number, sentinelUsername?: string, sentinelPassword?: string, sentinelTls: boolean }
  | Common & { mode: 'cluster', nodes: HostPort[] }

export type RegistryTarget = { mode: 'memory' } | { mode: 'file', dir: string } | RedisTarget

const VAR = 'DOORMAN_REGISTRY'
const OPTIONS = new Set(['prefix', 'tls', 'sentinelUsername', 'sentinelPassword', 'sentinelTls', 'name', 'db'])

function bad (why: string): ConfigError {
  return new ConfigError(VAR, `${VAR}: ${why}; expected memory, redis://host:port/db, rediss://…, redis+sentinel://host:26379,host:26379/master or redis+cluster://host:6379,host:6379`)
}

function decode (s: string, what: string): string {
  try { return decodeURIComponent(s) } catch { throw bad(`the ${what} is not properly percent-encoded`) }
}

function parseHost (text: string, defaultPort: number): HostPort {
  let host: string
  let port: string | undefined
  if (text.startsWith('[')) {
    const end = text.indexOf(']')
    if (end === -1) throw bad(`unclosed [ in host ${JSON.stringify(text)}`)
    host = text.slice(1, end)
    const rest = text.slice(end + 1)
    if (rest !== '' && !rest.startsWith(':')) throw bad(`bad host ${JSON.stringify(text)}`)
    port = rest === '' ? undefined : rest.slice(1)
  } else {
    const parts = text.split(':')
    if (parts.length > 2) throw bad(`bad host ${JSON.stringify(text)} (put IPv6 addresses in brackets)`)
    host = parts[0]
    port = parts[1]
  }
  if (host === '' || !/^[A-Za-z0-9.\-:%]+$/.test(host)) throw bad(`bad host ${JSON.stringify(text)}`)
  if (port === undefined || port === '') return { host, port: defaultPort }
  if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) throw bad(`bad port ${JSON.stringify(port)}`)
  return { host, port: Number(port) }
}

function flag (v: string | undefined, name: string): boolean {
  if (v === undefined) return false
  if (v === '1' || v === 'true' || v === 'yes') return true
  if (v === '0' || v === 'false' || v === 'no') return false
  throw bad(`option ${name} must be 1 or 0`)
}

function parseDb (v: string | undefined): number {
  if (v === undefined || v === '') return 0
  if (!/^\d+$/.test(v) || Number(v) > 1_000_000) throw bad(`bad database number ${JSON.stringify(v)}`)
  return Number(v)
}

/** Parses DOORMAN_REGISTRY. */
export function parseRegistryUrl (url: string): RegistryTarget {
  const text = url.trim()
  if (text === 'memory') return { mode: 'memory' }
  if (text.startsWith('file://')) {
    const dir = decode(text.slice('file://'.length).replace(/\?.*$/, ''), 'path')
    if (!dir.startsWith('/')) throw bad('a file registry needs an absolute directory, such as file:///tmp/doorman-registry')
    return { mode: 'file', dir }
  }
  const m = /^(redis|rediss|redis\+sentinel|redis\+cluster):\/\/(?:([^@/?]*)@)?([^/?]*)(\/[^?]*)?(?:\?(.*))?$/.exec(text)
  if (m === null) throw bad('not a registry URL')
  const [, scheme, auth, hostsText, pathText, query] = m
  const opts = new Map<string, string>()
  if (query !== undefined && query !== '') {
    for (const pair of query.split('&')) {
      if (pair === '') continue
      const eq = pair.indexOf('=')
      const k = decode(eq === -1 ? pair : pair.slice(0, eq), 'option')
      const v = decode(eq === -1 ? '' : pair.slice(eq + 1), 'option')
      if (!OPTIONS.has(k)) throw bad(`unknown option ${JSON.stringify(k)} (known: ${[...OPTIONS].join(', ')})`)
      opts.set(k, v)
    }
  }
  let username: string | undefined
  let password: string | undefined
  if (auth !== undefined && auth !== '') {
    const colon = auth.indexOf(':')
    if (colon === -1) {
      username = decode(auth, 'user name')
    } else {
      username = decode(auth.slice(0, colon), 'user name')
      password = decode(auth.slice(colon + 1), 'password')
    }
    if (username === '') username = undefined
    if (password === '') password = undefined
  }
  const prefix = opts.get('prefix') ?? 'doorman'
  if (!/^[A-Za-z0-9._:-]{1,64}$/.test(prefix)) throw bad('option prefix takes 1 to 64 letters, digits, ".", "_", ":" or "-"')
  if (hostsText === '') throw bad('no host')
  const hosts = hostsText.split(',').filter((h) => h !== '')
  const path = (pathText ?? '').split('/').filter((p) => p !== '')
  const common = { username, password, prefix }
  switch (scheme) {
    case 'redis':
    case 'rediss': {
      if (hosts.length !== 1) throw bad(`${scheme}:// takes one host; use redis+sentinel:// or redis+cluster:// for several`)
      if (path.length > 1) throw bad('the path is the database number only')
      const { host, port } = parseHost(hosts[0], 6379)
      return { mode: 'standalone', ...common, tls: scheme === 'rediss' || flag(opts.get('tls'), 'tls'), host, port, db: parseDb(path[0] ?? opts.get('db')) }
    }
    case 'redis+sentinel': {
      const name = opts.get('name') ?? (path[0] !== undefined ? decode(path[0], 'master name') : undefined)
      if (name === undefined || name === '') throw bad('redis+sentinel:// needs the master name as the path (redis+sentinel://host:26379/mymaster)')
      const dbText = opts.has('name') ? path[0] ?? opts.get('db') : path[1] ?? opts.get('db')
      return {
        mode: 'sentinel',
        ...common,
        tls: flag(opts.get('tls'), 'tls'),
        sentinels: hosts.map((h) => parseHost(h, 26379)),
        name,
        db: parseDb(dbText),
        sentinelUsername: opts.get('sentinelUsername'),
        sentinelPassword: opts.get('sentinelPassword'),
        sentinelTls: flag(opts.get('sentinelTls'), 'sentinelTls')
      }
    }
    default: {
      if (path.length > 0) throw bad('redis+cluster:// takes no database number (Cluster has only database 0)')
      return { mode: 'cluster', ...common, tls: flag(opts.get('tls'), 'tls'), nodes: hosts.map((h) => parseHost(h, 6379)) }
    }
  }
}

/** The target for logs: no passwords. */
export function describeTarget (t: RegistryTarget): string {
  const hp = (h: HostPort): string => `${h.host.includes(':') ? `[${h.host}]` : h.host}:${h.port}`
  switch (t.mode) {
    case 'memory': return 'memory'
    case 'file': return `file://${t.dir}`
    case 'standalone': return `${t.tls ? 'rediss' : 'redis'}://${hp(t)}/${t.db}`
    case 'sentinel': return `redis+sentinel://${t.sentinels.map(hp).join(',')}/${t.name}/${t.db}`
    case 'cluster': return `redis+cluster://${t.nodes.map(hp).join(',')}`
  }
}
