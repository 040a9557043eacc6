// Dubbo's URLs as they sit in ZooKeeper: `/dubbo/<interface>/providers/<URL.encode(url.toFullString())>`, where
// URL.encode is Java's URLEncoder (UTF-8, form encoding: a space is `+`, only `*-._` and alphanumerics are kept).

/** Java's URLEncoder.encode(s, "UTF-8"). */
export function javaEncode (s: string): string {
  return encodeURIComponent(s).replace(/[!'()~]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase()).replace(/%20/g, '+')
}

/** Java's URLDecoder.decode(s, "UTF-8"); null when it is not valid. */
export function javaDecode (s: string): string | null {
  try { return decodeURIComponent(s.replace(/\+/g, ' ')) } catch { return null }
}

export interface DubboUrl {
  protocol: string
  host: string
  port: number
  /** The path: the interface name, for provider and override URLs. */
  path: string
  params: Map<string, string>
}

const URL_RE = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(?:[^@/]*@)?(\[[^\]]+\]|[^:/?]*)(?::(\d+))?(?:\/([^?]*))?(?:\?(.*))?$/

/** Parses a Dubbo URL (`dubbo://10.0.0.5:20880/com.foo.Bar?k=v&…`); null when it is not one. */
export function parseDubboUrl (text: string): DubboUrl | null {
  const m = URL_RE.exec(text)
  if (m === null) return null
  const params = new Map<string, string>()
  for (const pair of (m[5] ?? '').split('&')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    const k = eq === -1 ? pair : pair.slice(0, eq)
    const v = eq === -1 ? k : pair.slice(eq + 1)
    // A key given twice keeps its last value, as Dubbo's URL.valueOf puts them in a map.
    params.set(k, v)
  }
  const host = m[2].startsWith('[') ? m[2].slice(1, -1) : m[2]
  return { protocol: m[1], host, port: m[3] === undefined ? 0 : Number(m[3]), path: m[4] ?? '', params }
}

/** A URL's text as Dubbo's toFullString writes it: parameters in key order. */
export function formatDubboUrl (u: DubboUrl): string {
  const host = u.host.includes(':') ? `[${u.host}]` : u.host
  const query = [...u.params.entries()].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([k, v]) => `${k}=${v}`).join('&')
  return `${u.protocol}://${host}${u.port !== 0 ? `:${u.port}` : ''}/${u.path}${query !== '' ? `?${query}` : ''}`
}

/**
 * The override Dubbo's admin writes to take one provider out of its consumers' choice:
 * `override://<ip>:<port>/<interface>?category=configurators&disabled=true&dynamic=false&enabled=true`, with the
 * provider's group and version (a consumer of a group only takes configurators of that group).
 */
export function disableOverride (provider: DubboUrl, extra: Record<string, string> = {}): string {
  const params = new Map<string, string>([['category', 'configurators'], ['disabled', 'true'], ['dynamic', 'false'], ['enabled', 'true']])
  for (const k of ['group', 'version']) {
    const v = provider.params.get(k)
    if (v !== undefined && v !== '') params.set(k, v)
  }
  for (const [k, v] of Object.entries(extra)) params.set(k, v)
  return formatDubboUrl({ protocol: 'override', host: provider.host, port: provider.port, path: provider.path, params })
}
