// Header rewriting on the proxy path, over raw (flat) header arrays: no per-request objects beyond the output array.
import { randomUUID } from 'node:crypto'

/** The caller's identity toward the app (Envoy's header): only doorman sets it, whatever a client sent. */
const XFCC = 'x-forwarded-client-cert'
/** Hop-by-hop request headers never forwarded (RFC 9110 §7.6.1), plus the ones undici refuses to send. */
const REQUEST_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'upgrade', 'trailer', 'proxy-authorization', 'expect', 'http2-settings'])
/** Hop-by-hop response headers. `trailer` stays: it announces the trailers doorman passes on. */
const RESPONSE_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'proxy-authenticate'])

/** True for a header name under doorman's own prefix (`x-doorman-`, any case): only doorman may send those. */
export function isOwnHeader (name: string): boolean {
  return name.length > 10 && (name.charCodeAt(0) | 0x20) === 120 /* x */ && name.charCodeAt(1) === 45 /* - */ &&
    name.slice(2, 10).toLowerCase() === 'doorman-'
}

/** isOwnHeader for a raw header name as undici gives it (latin1 bytes). */
function isOwnRaw (name: Buffer): boolean {
  return name.length > 10 && (name[0] | 0x20) === 120 && name[1] === 45 && name.toString('latin1', 2, 10).toLowerCase() === 'doorman-'
}

/** A table by name length: 1 where some name of `names` has that length (names of other lengths can't match). */
function lengthTable (names: Iterable<string>): Uint8Array {
  const list = [...names]
  const t = new Uint8Array(Math.max(...list.map((n) => n.length)) + 1)
  for (const n of list) t[n.length] = 1
  return t
}
/** Response header names worth lower-casing to compare: as long as a dropped one, x-request-id or content-length. */
const RESPONSE_LENGTHS = lengthTable([...RESPONSE_DROP, 'x-request-id', 'content-length'])
/** Request header names worth lower-casing to compare (unless Connection names others): those handled below. */
const REQUEST_LENGTHS = lengthTable([...REQUEST_DROP, 'x-forwarded-for', 'x-request-id', 'host', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'content-length', XFCC])

/** Adds the header names listed in a Connection header value, lower-cased, to `set` (made when needed). */
function connectionTokens (value: string, set: Set<string> | null = null): Set<string> | null {
  // The usual values name no header: answer them without splitting and lower-casing.
  if (value.length === 10 || value.length === 5) {
    const lower = value.toLowerCase()
    if (lower === 'keep-alive' || lower === 'close') return set
  }
  for (const t of value.split(',')) {
    const name = t.trim().toLowerCase()
    if (name !== '' && name !== 'close' && name !== 'keep-alive') (set ??= new Set()).add(name)
  }
  return set
}

export interface ForwardInfo {
  /** The client's address, appended to x-forwarded-for. */
  remoteAddress: string
  /** `http` or `https`. */
  proto: string
  /** The port the request arrived on, sent as x-forwarded-port (0: none). */
  port: number
  /**
   * Whether the peer is a trusted hop (DOORMAN_TRUSTED_HOPS, or the local app on the outbound lane): its
   * x-forwarded-proto, -host and -port are kept. Otherwise doorman sets them from what it saw itself.
   */
  trusted: boolean
  /** x-forwarded-client-cert to send (a caller verified over mTLS), or undefined: none. */
  clientCert?: string
}

export interface RequestHeaders {
  headers: string[]
  requestId: string
  hasBody: boolean
  /** Why the request can't be forwarded faithfully (answer 400), or null. */
  refused: string | null
}

/**
 * Builds the header list sent to the app from a request's rawHeaders, by the one policy of docs/headers.md:
 * hop-by-hop headers dropped (including those named in Connection) and doorman's own (x-doorman-*) removed;
 * x-forwarded-for appended; x-forwarded-proto, -host and -port set by doorman (kept from a trusted peer, added when
 * absent); x-request-id kept or made; x-forwarded-client-cert removed, and set when the caller came over mTLS.
 */
export function requestHeaders (raw: string[], info: ForwardInfo): RequestHeaders {
  const out: string[] = []
  let named: Set<string> | null = null
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === 10 && raw[i].toLowerCase() === 'connection') named = connectionTokens(raw[i + 1], named)
  }
  // Connection may name hop-by-hop headers to drop, but dropping Content-Length would lose the body's framing and
  // dropping Host would send the request elsewhere: such a request is refused rather than changed.
  let refused: string | null = null
  if (named !== null && (named.has('content-length') || named.has('host'))) refused = 'the Connection header names Content-Length or Host'
  let xff: string | null = null
  let requestId = ''
  let host = ''
  let hasProto = false
  let hasXfHost = false
  let hasXfPort = false
  let hasBody = false
  const trusted = info.trusted
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]
    const value = raw[i + 1]
    if (named === null && REQUEST_LENGTHS[name.length] !== 1) {
      if (!isOwnHeader(name)) out.push(name, value)
      continue
    }
    if (isOwnHeader(name)) continue
    const lower = name.toLowerCase()
    if (REQUEST_DROP.has(lower)) {
      if (lower === 'transfer-encoding') hasBody = true
      continue
    }
    if (named !== null && named.has(lower)) continue
    switch (lower) {
      case 'x-forwarded-for':
        xff = xff === null ? value : `${xff}, ${value}`
        continue
      case 'x-request-id':
        if (requestId === '') requestId = value
        break
      case 'host':
        if (host !== '') refused = 'two Host headers'
        host = value
        break
      case 'x-forwarded-proto':
        if (!trusted) continue
        hasProto = true
        break
      case 'x-forwarded-host':
        if (!trusted) continue
        hasXfHost = true
        break
      case 'x-forwarded-port':
        if (!trusted) continue
        hasXfPort = true
        break
      case 'content-length':
        if (value !== '0') hasBody = true
        break
      case XFCC:
        continue
    }
    out.push(name, value)
  }
  out.push('x-forwarded-for', xff === null ? info.remoteAddress : `${xff}, ${info.remoteAddress}`)
  if (info.clientCert !== undefined) out.push(XFCC, info.clientCert)
  if (!hasProto) out.push('x-forwarded-proto', info.proto)
  if (!hasXfHost && host !== '') out.push('x-forwarded-host', host)
  if (!hasXfPort && info.port !== 0) out.push('x-forwarded-port', String(info.port))
  if (requestId === '') {
    requestId = randomUUID()
    out.push('x-request-id', requestId)
  }
  return { headers: out, requestId, hasBody, refused }
}

/**
 * The same policy for an upgrade request (WebSocket), as the header object http-proxy sends: `upgrade` kept and
 * `connection: upgrade` set (the two hop-by-hop headers an upgrade needs), duplicates as arrays.
 */
export function upgradeHeaders (raw: string[], info: ForwardInfo): { headers: Record<string, string | string[]>, requestId: string, refused: string | null } {
  const h = requestHeaders(raw, info)
  const out: Record<string, string | string[]> = {}
  for (let i = 0; i < h.headers.length; i += 2) {
    const name = h.headers[i].toLowerCase()
    const value = h.headers[i + 1]
    const had = out[name]
    out[name] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value]
  }
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === 7 && raw[i].toLowerCase() === 'upgrade') { out.upgrade = raw[i + 1]; break }
  }
  out.connection = 'upgrade'
  return { headers: out, requestId: h.requestId, refused: h.refused }
}

/** Removes doorman's own headers (x-doorman-*) from a header object in place (the upgrade path's responses). */
export function stripOwn (headers: Record<string, unknown>): void {
  for (const name of Object.keys(headers)) if (isOwnHeader(name)) Reflect.deleteProperty(headers, name)
}

export interface ResponseHead {
  headers: string[]
  /** The app's content-length when it sent exactly one, as a valid number; -1 otherwise. */
  contentLength: number
}

/**
 * Builds the header list sent to the client from the app's raw response headers (Buffers, as undici gives them),
 * dropping hop-by-hop headers, and appending `extra` (flat name/value pairs). Adds x-request-id when the app did not.
 * With `stripOwn`, x-doorman-* headers are removed too: an app's answer never speaks for doorman (the inbound lane);
 * the outbound lane passes the provider doorman's own signals on to the app.
 */
export function responseHeaders (raw: Buffer[], requestId: string, extra: readonly string[] | null, stripOwn = true): ResponseHead {
  const out: string[] = []
  let named: Set<string> | null = null
  let sawRequestId = false
  let contentLength = -1
  let lengths = 0
  for (let i = 0; i < raw.length; i += 2) {
    if (stripOwn && isOwnRaw(raw[i])) continue
    const name = raw[i].toString('latin1')
    if (RESPONSE_LENGTHS[name.length] === 1) {
      const lower = name.toLowerCase()
      if (RESPONSE_DROP.has(lower)) {
        if (lower === 'connection') named = connectionTokens(raw[i + 1].toString('latin1'), named)
        continue
      }
      if (lower === 'x-request-id') sawRequestId = true
      else if (lower === 'content-length') {
        const value = raw[i + 1].toString('latin1')
        contentLength = ++lengths === 1 && /^\d{1,15}$/.test(value) ? Number(value) : -1
        out.push(name, value)
        continue
      }
    }
    out.push(name, raw[i + 1].toString('latin1'))
  }
  if (named !== null) {
    for (let i = out.length - 2; i >= 0; i -= 2) {
      if (named.has(out[i].toLowerCase())) {
        if (out[i].length === 14 && out[i].toLowerCase() === 'content-length') contentLength = -1
        out.splice(i, 2)
      }
    }
  }
  if (!sawRequestId) out.push('x-request-id', requestId)
  if (extra !== null) for (const h of extra) out.push(h)
  return { headers: out, contentLength }
}

/** Trailers from undici's raw form (flat name/value) to what ServerResponse.addTrailers takes; x-doorman-* dropped. */
export function trailerPairs (raw: Array<Buffer | string>): Array<[string, string]> {
  const out: Array<[string, string]> = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toString()
    if (!isOwnHeader(name)) out.push([name, raw[i + 1].toString()])
  }
  return out
}
