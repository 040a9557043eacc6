// The one place that turns doorman's own outcomes (errors, shedding, malformed requests) into responses:
// a synthetic status with a header naming the cause, a one-line body, never a stack trace.
import type { ServerResponse } from 'node:http'
import { randomUUID } from 'node:crypto'
import type { Duplex } from 'node:stream'
import type { DoormanError } from './errors.js'
import type { ShedReason } from '../limiter/index.js'

/** 503 for a request the limiter or drain turned away: the app never saw it, so it is safe to retry anywhere. */
export function respondShed (res: ServerResponse, reason: ShedReason, extra?: readonly string[] | null): void {
  if (res.headersSent) { res.destroy(); return }
  const body = `shed: ${reason}\n`
  const headers = ['content-type', 'text/plain; charset=utf-8', 'content-length', String(body.length), 'retry-after', '1', 'x-doorman-shed', reason, 'x-request-id', requestIdFor(res.req)]
  if (extra !== undefined && extra !== null) headers.push(...extra)
  res.writeHead(503, headers)
  res.end(body)
}

/** 502/503/504 for an upstream or internal failure before any response byte was sent. */
export function respondError (res: ServerResponse, err: DoormanError, extra?: string[]): void {
  if (res.headersSent) { res.destroy(); return }
  const body = `${err.message}\n`
  const headers = ['content-type', 'text/plain; charset=utf-8', 'content-length', String(Buffer.byteLength(body)), 'x-doorman-error', err.code]
  if (extra !== undefined) headers.push(...extra)
  res.writeHead(err.status, headers)
  res.end(body)
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 405: 'Method Not Allowed', 408: 'Request Timeout', 431: 'Request Header Fields Too Large', 503: 'Service Unavailable' }

/** Status for a request Node's parser rejected before it became a request. */
export function clientErrorStatus (code: string | undefined): number {
  if (code === 'HPE_HEADER_OVERFLOW') return 431
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'HPE_HEADERS_TIMEOUT') return 408
  return 400
}

/** Answers on a raw socket (malformed request heads, refused upgrades, CONNECT) and closes it. */
export function respondOnSocket (socket: Duplex, status: number, code: string, extra = ''): void {
  if (!socket.writable) { socket.destroy(); return }
  const body = `${REASONS[status] ?? 'Error'}\n`
  socket.end(`HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nx-doorman-error: ${code}\r\n${extra}\r\n${body}`)
}

/** A request id for doorman's own answers: the client's own, else a new one. */
export function requestIdFor (req: { headers: Record<string, string | string[] | undefined> } | undefined): string {
  const v = req?.headers['x-request-id']
  return typeof v === 'string' && v !== '' ? v : randomUUID()
}
