// doorman's own answers outside a proxied exchange (errors before one starts, malformed requests, refused upgrades):
// a synthetic status with a header naming the cause, a one-line body, never a stack trace. Answers inside an exchange
// (sheds, upstream errors) take their protocol's shape in proxy/client.ts.
import type { ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { DoormanError } from './errors.js'

/** 502/503/504 for an upstream or internal failure before any response byte was sent. */
export function respondError (res: ServerResponse, err: DoormanError, extra?: string[]): void {
  if (res.headersSent) { res.destroy(); return }
  const body = `${err.message}\n`
  const headers = ['content-type', 'text/plain; charset=utf-8', 'content-length', String(Buffer.byteLength(body)), 'x-doorman-error', err.code]
  if (extra !== undefined) headers.push(...extra)
  res.writeHead(err.status, headers)
  res.end(body)
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 405: 'Method Not Allowed', 408: 'Request Timeout', 431: 'Request Header Fields Too Large', 503: 'Service Unavailable' }

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
