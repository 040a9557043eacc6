// HTTP/2 response plumbing both lanes share: a proxied response head in HTTP/2's form, and sending it so that
// trailers (gRPC's status) can follow the body.
import http2, { type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2'

const { NGHTTP2_NO_ERROR } = http2.constants

/** Response headers HTTP/2 forbids (RFC 9113 §8.2.2); responseHeaders already drops the hop-by-hop ones. */
const H2_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'])

/** A response head for an HTTP/2 stream from a status and flat name/value pairs (repeated names become arrays). */
export function h2Head (status: number, flat: readonly string[]): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { ':status': status }
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i].toLowerCase()
    if (H2_DROP.has(name)) continue
    const prev = out[name]
    out[name] = prev === undefined ? flat[i + 1] : Array.isArray(prev) ? [...prev, flat[i + 1]] : [String(prev), flat[i + 1]]
  }
  return out
}

/**
 * Sends a proxied response's head; the stream's trailers are read from `trailers()` when the body has ended (empty
 * when there are none). Returns false when the client reset the stream a moment ago (its 'close' settles the call).
 */
export function respondWithTrailers (s: ServerHttp2Stream, head: OutgoingHttpHeaders, trailers: () => OutgoingHttpHeaders | null): boolean {
  if (s.destroyed || s.closed) return false
  try {
    s.respond(head, { waitForTrailers: true })
  } catch {
    return false
  }
  s.on('wantTrailers', () => {
    try { s.sendTrailers(trailers() ?? {}) } catch { s.close(NGHTTP2_NO_ERROR) }
  })
  return true
}
