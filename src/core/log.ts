// The one pino root. Modules get `log.child({ component })` through their constructors.
import { pino, type Logger, type DestinationStream } from 'pino'

export type { Logger }

export function createLogger (level: string, dest?: DestinationStream): Logger {
  return pino({
    level,
    base: { svc: 'doorman' },
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie', 'config.adminToken'], censor: '<redacted>' },
    timestamp: pino.stdTimeFunctions.isoTime
  }, dest ?? pino.destination({ dest: 1, sync: true }))
}

/** A logger that writes nothing, for tests and library use. */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}

/**
 * Logs a failed proxy exchange: doorman's own fault (DOORMAN_ERR_INTERNAL) at error with its stack; a malformed
 * answer from the app (DOORMAN_ERR_UPSTREAM_PROTOCOL) as one warn line naming what was wrong, never the app's bytes
 * (undici keeps them on the error as `data`); the rest are counted in metrics, not logged.
 */
export function logProxyError (log: Logger, code: string, err: Error): void {
  if (code === 'DOORMAN_ERR_INTERNAL') log.error({ err }, 'proxy error')
  else if (code === 'DOORMAN_ERR_UPSTREAM_PROTOCOL') log.warn({ code, reason: err.message.slice(0, 200) }, 'the app sent a malformed response')
}
