// Authorization of callers by identity (DOORMAN_ALLOW): which SPIFFE IDs may call this app, optionally per path
// prefix. Pure: no I/O, no clock. The inbound lane asks once per connection when no rule depends on the path, else
// once per request.
//
// DOORMAN_ALLOW is a comma-separated list of entries, each a SPIFFE ID pattern (`*` = exactly one path segment), or
// `<path prefix>=<pattern>` for the requests under that prefix. A request is judged by the entries of the longest
// prefix that its path starts with; entries without a prefix cover every other path. Where no entry covers a path,
// every caller is admitted: authenticated ones, and in `permissive` plaintext ones too.

/** Why a caller was denied: the value of x-doorman-denied, and a bounded metric label. */
export type DenyReason = 'unauthenticated' | 'not-allowed'

export interface AllowRule {
  /** The path prefix the rule is for; '' for every path. */
  readonly prefix: string
  readonly pattern: string
  readonly re: RegExp
}

export class AllowError extends Error {
  override name = 'AllowError'
}

const SEGMENT = /^[A-Za-z0-9._-]+$/

/** A SPIFFE ID pattern as a regular expression; throws AllowError when it is not one. */
export function compilePattern (pattern: string): RegExp {
  if (!pattern.startsWith('spiffe://')) throw new AllowError(`${JSON.stringify(pattern)} is not a SPIFFE ID pattern (spiffe://<trust-domain>/…)`)
  const parts = pattern.slice('spiffe://'.length).split('/')
  const out: string[] = []
  for (const p of parts) {
    if (p === '*') out.push('[A-Za-z0-9._-]+')
    else if (SEGMENT.test(p) && p !== '.' && p !== '..') out.push(p.replace(/\./g, '\\.'))
    else throw new AllowError(`${JSON.stringify(pattern)}: ${JSON.stringify(p)} is not a path segment or *`)
  }
  return new RegExp(`^spiffe://${out.join('/')}$`)
}

/** Parses DOORMAN_ALLOW; throws AllowError naming the bad entry. */
export function parseAllow (text: string): AllowRule[] {
  const rules: AllowRule[] = []
  for (const raw of text.split(',')) {
    const entry = raw.trim()
    if (entry === '') continue
    const eq = entry.indexOf('=')
    let prefix = ''
    let pattern = entry
    if (eq !== -1) {
      prefix = entry.slice(0, eq).trim()
      pattern = entry.slice(eq + 1).trim()
      if (!prefix.startsWith('/')) throw new AllowError(`${JSON.stringify(entry)}: a path prefix starts with /`)
      if (/[?#%\s]/.test(prefix)) throw new AllowError(`${JSON.stringify(entry)}: a path prefix holds no ?, #, % or spaces`)
    }
    rules.push({ prefix, pattern, re: compilePattern(pattern) })
  }
  return rules
}

/**
 * A request path as the rules compare it: without its query, percent-decoded, with dot segments resolved and runs of
 * slashes as one, so that `/a/../admin/`, `//admin/` and `/%61dmin/` all meet the rule for `/admin/`. null when it
 * can't be decoded (judged by the strictest rule).
 */
export function normalizePath (p: string): string | null {
  const q = p.search(/[?#]/)
  let s = q === -1 ? p : p.slice(0, q)
  try { s = decodeURIComponent(s) } catch { return null }
  const out: string[] = []
  const segs = s.split('/')
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]
    if (seg === '.' || (seg === '' && i > 0 && i < segs.length - 1)) continue
    if (seg === '..') { out.pop(); continue }
    out.push(seg)
  }
  let r = out.join('/')
  if (!r.startsWith('/')) r = '/' + r
  if ((s.endsWith('/.') || s.endsWith('/..')) && !r.endsWith('/')) r += '/'
  return r
}

export class Authorizer {
  readonly rules: readonly AllowRule[]
  /** No rule depends on the path: one decision per caller (per connection). */
  readonly pathIndependent: boolean
  readonly #prefixes: readonly string[]
  readonly #byPrefix: ReadonlyMap<string, readonly RegExp[]>

  constructor (rules: readonly AllowRule[]) {
    this.rules = rules
    const by = new Map<string, RegExp[]>()
    for (const r of rules) {
      const list = by.get(r.prefix) ?? []
      list.push(r.re)
      by.set(r.prefix, list)
    }
    this.#byPrefix = by
    // Longest first: the first that matches is the one that decides.
    this.#prefixes = [...by.keys()].filter((p) => p !== '').sort((a, b) => b.length - a.length)
    this.pathIndependent = this.#prefixes.length === 0
  }

  static parse (text: string): Authorizer { return new Authorizer(parseAllow(text)) }

  /** True when every caller is admitted (DOORMAN_ALLOW empty). */
  get open (): boolean { return this.rules.length === 0 }

  /**
   * Whether `identity` (a verified SPIFFE ID, or null for a plaintext caller) may call `path`: null when admitted,
   * else why not. `path` is ignored when no rule depends on it.
   */
  decide (identity: string | null, path: string): DenyReason | null {
    let patterns: readonly RegExp[] | undefined
    if (this.#prefixes.length > 0) {
      const p = normalizePath(path)
      if (p === null) {
        // An undecodable path is judged by every rule at once: the caller must be admitted by all of them.
        for (const list of this.#byPrefix.values()) { const r = check(list, identity); if (r !== null) return r }
        return null
      }
      for (const prefix of this.#prefixes) {
        if (p.startsWith(prefix) || p + '/' === prefix) { patterns = this.#byPrefix.get(prefix); break }
      }
    }
    patterns ??= this.#byPrefix.get('')
    if (patterns === undefined) return null
    return check(patterns, identity)
  }
}

function check (patterns: readonly RegExp[], identity: string | null): DenyReason | null {
  if (identity === null) return 'unauthenticated'
  for (const re of patterns) if (re.test(identity)) return null
  return 'not-allowed'
}
