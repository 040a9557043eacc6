// Which flow (caller) an inbound request belongs to, for the limiter's fair queue (src/limiter/fair.ts):
//   1. the caller's verified identity, when it came over mTLS (its SPIFFE ID);
//   2. else the value of DOORMAN_FLOW_HEADER, honoured only from a trusted hop (DOORMAN_TRUSTED_HOPS >= 1, the same
//      trust the forwarded headers get: a client that reaches doorman directly can't pick its own flow);
//   3. else the client address (the peer of the TCP connection).
// The streams of one HTTP/2 connection share its address and its identity, so they are one flow.
// Keys carry their kind (`id:`, `h:`, `ip:`) so a header value can never pose as an identity or an address, and are
// cut to a bounded length so that a flow's key costs a bounded amount of memory.

/** What the resolver reads of a request. */
export interface FlowInput {
  /**
   * The caller's verified identity (the peer certificate's SPIFFE ID) when the request came over mTLS; it takes
   * precedence over the rest.
   */
  identity?: string
  /** The request's headers, flat name/value pairs (HTTP/2: without pseudo-headers). */
  rawHeaders: readonly string[]
  /** The peer's address (the client, or the trusted proxy in front). */
  remoteAddress: string
  /** Whether the peer is a trusted hop (DOORMAN_TRUSTED_HOPS >= 1). */
  trusted: boolean
}

/** Longest flow key kept, in characters. */
export const MAX_FLOW_KEY = 128

/**
 * A resolver for DOORMAN_FLOW_HEADER (`''`: none). Returns the request's flow key.
 */
export function flowResolver (header: string): (input: FlowInput) => string {
  const name = header.toLowerCase()
  const len = name.length
  return (input) => {
    const id = input.identity
    if (id !== undefined && id !== '') return cut(`id:${id}`)
    if (len > 0 && input.trusted) {
      const raw = input.rawHeaders
      for (let i = 0; i < raw.length; i += 2) {
        const n = raw[i]
        if (n.length === len && n.toLowerCase() === name) {
          const v = raw[i + 1].trim()
          if (v !== '') return cut(`h:${v}`)
        }
      }
    }
    return `ip:${input.remoteAddress}`
  }
}

function cut (key: string): string {
  return key.length > MAX_FLOW_KEY ? key.slice(0, MAX_FLOW_KEY) : key
}
