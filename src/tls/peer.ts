// What the inbound lane knows of a connection's caller, kept on the connection's socket (the decrypted TLSSocket; an
// HTTP/2 session's socket proxy reads through to it) so that each request finds it without a lookup.
import type { DenyReason } from '../authz/index.js'

export interface Peer {
  /** The caller's verified SPIFFE ID. */
  readonly id: string
  /** x-forwarded-client-cert for the app: `By=<own ID>;Hash=<peer cert SHA-256>;URI=<peer ID>`. */
  readonly xfcc: string
  /** The authorization decision for the whole connection, when no rule depends on the path (undefined: per request). */
  denied?: DenyReason | null
}

const PEER = Symbol('doorman.peer')

interface WithPeer { [PEER]?: Peer }

export function setPeer (socket: object, peer: Peer): void { (socket as WithPeer)[PEER] = peer }

/** The verified caller of the connection `socket` belongs to, or undefined for a plaintext one. */
export function peerOf (socket: object | null | undefined): Peer | undefined {
  return socket == null ? undefined : (socket as WithPeer)[PEER]
}
