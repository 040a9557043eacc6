// The registry: one interface (types.ts), an embedded memory implementation and a Redis one. openRegistry()
// picks one from DOORMAN_REGISTRY.
import type { Logger } from '../core/log.js'
import type { Registry } from './types.js'
import { MemoryRegistry } from './memory.js'
import { RedisRegistry } from './redis.js'
import { FileRegistry } from './file.js'
import { parseRegistryUrl } from './url.js'

export * from './types.js'
export { MemoryRegistry } from './memory.js'
export { RedisRegistry } from './redis.js'
export { FileRegistry } from './file.js'
export { ServiceView } from './view.js'
export { parseRegistryUrl, describeTarget, type RegistryTarget, type RedisTarget } from './url.js'

export interface OpenOptions {
  log?: Logger
  /** Full resync period of each watch, in milliseconds. */
  resyncMs?: number
  /** Longest wait for one Redis command, in milliseconds. */
  commandTimeout?: number
  /** After a Redis reconnect, how long listings never remove instances (see RedisRegistryOptions). */
  reconnectGraceMs?: number
}

/** Opens the registry DOORMAN_REGISTRY names. Throws ConfigError (DOORMAN_REGISTRY) for a bad URL. */
export function openRegistry (url: string, opts: OpenOptions = {}): Registry {
  const target = parseRegistryUrl(url)
  switch (target.mode) {
    case 'memory':
      return new MemoryRegistry()
    case 'file':
      return new FileRegistry({ dir: target.dir, resyncMs: opts.resyncMs })
    default:
      return new RedisRegistry({ target, log: opts.log, resyncMs: opts.resyncMs, commandTimeout: opts.commandTimeout, reconnectGraceMs: opts.reconnectGraceMs })
  }
}
