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
