// Every error doorman raises, each with a stable code, a default message and the HTTP status it maps to.
// docs/errors.md lists them all (a test keeps the two in step).

export class DoormanError extends Error {
  readonly code: string
  readonly status: number
  constructor (code: string, message: string, status: number, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'DoormanError'
    this.code = code
    this.status = status
  }
}

/** A bad or missing setting; the entry point exits 78 with the message. */
export class ConfigError extends DoormanError {
  readonly variable: string
  constructor (variable: string, message: string) {
    super('DOORMAN_ERR_CONFIG', message, 500)
    this.name = 'ConfigError'
    this.variable = variable
  }
}

/** The app refused or reset the connection, or closed it before answering. */
export class UpstreamConnectError extends DoormanError {
  constructor (cause?: unknown) {
    super('DOORMAN_ERR_UPSTREAM_CONNECT', 'the app refused or reset the connection', 502, { cause })
  }
}

/** The app did not send response headers within DOORMAN_UPSTREAM_TIMEOUT. */
export class UpstreamTimeoutError extends DoormanError {
  constructor (cause?: unknown) {
    super('DOORMAN_ERR_UPSTREAM_TIMEOUT', 'the app did not answer in time', 504, { cause })
  }
}

/** The app sent a response doorman could not parse or pass on. */
export class UpstreamProtocolError extends DoormanError {
  constructor (cause?: unknown) {
    super('DOORMAN_ERR_UPSTREAM_PROTOCOL', 'the app sent a malformed response', 502, { cause })
  }
}

/**
 * A request doorman can't forward faithfully (two Host headers, a Connection header naming Content-Length or Host,
 * or anything undici refuses to send as given): the client's mistake, answered 400, never counted against the app.
 */
export class BadRequestError extends DoormanError {
  constructor (message = 'doorman cannot forward this request as sent', cause?: unknown) {
    super('DOORMAN_ERR_BAD_REQUEST', message, 400, { cause })
  }
}

/** Too many upgraded (WebSocket) connections are open. */
export class UpgradeLimitError extends DoormanError {
  constructor () {
    super('DOORMAN_ERR_UPGRADE_LIMIT', 'too many upgraded connections', 503)
  }
}

/** The outbound lane knows no instance of the requested service. */
export class NoInstanceError extends DoormanError {
  constructor (service: string) {
    super('DOORMAN_ERR_NO_INSTANCE', `no instance of service ${JSON.stringify(service)} is available`, 503)
  }
}

/** The outbound request named no service. */
export class NoServiceError extends DoormanError {
  constructor () {
    super('DOORMAN_ERR_NO_SERVICE', 'the request names no service (Host header or absolute-form URL)', 400)
  }
}

/** A caller DOORMAN_ALLOW does not admit (x-doorman-denied says why): never reaches the app or the limiter. */
export class DeniedError extends DoormanError {
  readonly reason: string
  constructor (reason: string) {
    super('DOORMAN_ERR_DENIED', reason === 'unauthenticated' ? 'this path needs a caller authenticated over mTLS' : 'the caller is not allowed to call this', 403)
    this.reason = reason
  }
}

/** The outbound lane could not reach an instance over mTLS as this sidecar's mode requires, or the instance is not who the registry says. */
export class MtlsError extends DoormanError {
  constructor (message: string, cause?: unknown) {
    super('DOORMAN_ERR_MTLS', message, 502, { cause })
  }
}

/** Any other failure while proxying. */
export class InternalError extends DoormanError {
  constructor (cause?: unknown) {
    super('DOORMAN_ERR_INTERNAL', 'internal proxy error', 502, { cause })
  }
}

/**
 * Every code, for docs and tests. DOORMAN_ERR_BAD_REQUEST is also answered on the raw socket for requests Node's
 * parser refused, as are the last four: upgrades to a protocol doorman doesn't carry (400), 431, 408, and 503 for
 * upgrades arriving after the listeners closed.
 */
export const ERROR_CODES = [
  'DOORMAN_ERR_CONFIG',
  'DOORMAN_ERR_UPSTREAM_CONNECT',
  'DOORMAN_ERR_UPSTREAM_TIMEOUT',
  'DOORMAN_ERR_UPSTREAM_PROTOCOL',
  'DOORMAN_ERR_UPGRADE_LIMIT',
  'DOORMAN_ERR_NO_INSTANCE',
  'DOORMAN_ERR_NO_SERVICE',
  'DOORMAN_ERR_INTERNAL',
  'DOORMAN_ERR_DENIED',
  'DOORMAN_ERR_MTLS',
  'DOORMAN_ERR_BAD_REQUEST',
  'DOORMAN_ERR_UPGRADE_UNSUPPORTED',
  'DOORMAN_ERR_HEADER_OVERFLOW',
  'DOORMAN_ERR_HEADERS_TIMEOUT',
  'DOORMAN_ERR_DRAINING'
] as const

/**
 * OpenSSL's verification results as Node gives them on a client connection (the peer's certificate refused before
 * any request byte went out), and doorman's own outbound mTLS refusals.
 */
export const TLS_VERIFY_CODES: ReadonlySet<string> = new Set([
  'DOORMAN_MTLS_IMPOSTOR', 'DOORMAN_MTLS_NO_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_SIGNATURE_FAILURE', 'CERT_UNTRUSTED',
  'CERT_REJECTED', 'INVALID_PURPOSE', 'ERR_TLS_CERT_ALTNAME_INVALID'
])

/** A TLS failure (verification, or a handshake alert): outbound, DOORMAN_ERR_MTLS. */
export function isTlsFailure (code: string | undefined): boolean {
  return code !== undefined && (TLS_VERIFY_CODES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_'))
}

/** Maps an undici / socket error to doorman's error, in one place. */
export function classifyUpstreamError (err: unknown): DoormanError {
  if (err instanceof DoormanError) return err
  const e = err as { code?: string, name?: string } | undefined
  if (isTlsFailure(e?.code)) return new MtlsError(`mTLS to the instance failed: ${(err as Error).message}`, err)
  switch (e?.code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return new UpstreamTimeoutError(err)
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ENOTFOUND':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
    case 'UND_ERR_DESTROYED':
      return new UpstreamConnectError(err)
    case 'UND_ERR_INVALID_ARG':
      // undici refused the request before sending anything (a duplicate Host, a header it won't send).
      return new BadRequestError(`doorman cannot forward this request as sent: ${(err as Error).message}`, err)
    case 'HPE_INVALID_CONSTANT':
    case 'HPE_INVALID_HEADER_TOKEN':
    case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
    case 'UND_ERR_RES_EXCEEDED_MAX_SIZE':
    case 'UND_ERR_HEADERS_OVERFLOW':
      return new UpstreamProtocolError(err)
    default:
      if (typeof e?.code === 'string' && e.code.startsWith('HPE_')) return new UpstreamProtocolError(err)
      // undici's parser errors carry no code of their own (no status line, too many header fields, a bare CR).
      if (e?.name === 'HTTPParserError') return new UpstreamProtocolError(err)
      return new InternalError(err)
  }
}
