// gRPC's view of doorman's own answers: status codes, the grpc-timeout header, and the trailers-only response shape
// (HTTP 200, grpc-status and grpc-message in the one HEADERS frame that ends the stream).
import type { DoormanError } from './errors.js'

export const GRPC_OK = 0
export const GRPC_CANCELLED = 1
export const GRPC_DEADLINE_EXCEEDED = 4
export const GRPC_RESOURCE_EXHAUSTED = 8
export const GRPC_INTERNAL = 13
export const GRPC_UNAVAILABLE = 14
export const GRPC_PERMISSION_DENIED = 7

/** A gRPC call: `content-type: application/grpc`, `application/grpc+proto`, `application/grpc-web…` excepted. */
export function isGrpc (contentType: string | string[] | undefined): boolean {
  if (typeof contentType !== 'string' || !contentType.startsWith('application/grpc')) return false
  const c = contentType.charCodeAt(16)
  return Number.isNaN(c) || c === 43 /* + */ || c === 59 /* ; */
}

const UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 }

/** `grpc-timeout` (1–8 digits and a unit: H M S m u n) in milliseconds; -1 when absent or malformed. */
export function grpcTimeoutMs (value: string | string[] | undefined): number {
  if (typeof value !== 'string') return -1
  const m = /^(\d{1,8})([HMSmun])$/.exec(value)
  if (m === null) return -1
  return Number(m[1]) * UNITS[m[2]]
}

/** The longest delay a Node timer holds (2³¹−1 ms, about 24.8 days): a longer one would fire at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * A grpc-timeout value for `ms` milliseconds: at most 8 digits (gRPC over HTTP/2 spec), in the finest unit that fits
 * (milliseconds up to 99,999,999, then seconds, minutes, hours), rounded down.
 */
export function encodeGrpcTimeout (ms: number): string {
  const v = Math.max(0, Math.floor(ms))
  if (v < 1e8) return `${v}m`
  if (v / 1000 < 1e8) return `${Math.floor(v / 1000)}S`
  if (v / 60_000 < 1e8) return `${Math.floor(v / 60_000)}M`
  return `${Math.min(99_999_999, Math.floor(v / 3_600_000))}H`
}

/** grpc-message is percent-encoded (gRPC over HTTP/2 spec): everything outside printable ASCII, and '%'. */
export function encodeGrpcMessage (msg: string): string {
  return msg.replace(/[^\x20-\x24\x26-\x7e]/gu, (ch) => encodeURIComponent(ch))
}

/**
 * The gRPC status for doorman's own error: a timeout is DEADLINE_EXCEEDED, a header block over the limits
 * RESOURCE_EXHAUSTED, a denial PERMISSION_DENIED, anything else UNAVAILABLE.
 */
export function grpcStatusOf (err: DoormanError): number {
  if (err.status === 504) return GRPC_DEADLINE_EXCEEDED
  if (err.status === 431) return GRPC_RESOURCE_EXHAUSTED
  if (err.status === 403) return GRPC_PERMISSION_DENIED
  return GRPC_UNAVAILABLE
}

/** The header block of a trailers-only answer; `extra` are flat name/value pairs. */
export function trailersOnly (status: number, message: string, extra?: readonly string[] | null): Record<string, string | number> {
  const h: Record<string, string | number> = { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(status), 'grpc-message': encodeGrpcMessage(message) }
  if (extra !== undefined && extra !== null) for (let i = 0; i < extra.length; i += 2) h[extra[i]] = extra[i + 1]
  return h
}
