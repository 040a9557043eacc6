// openRegistry(): the registry DOORMAN_REGISTRY names. Only the backend in use is loaded: a sidecar on the memory
// registry never loads ioredis (about 8 MB of a sidecar's memory; docs/benchmarks.md).
import type { Logger } from '../core/log.js'
import type { Registry } from './types.js'
import { MemoryRegistry } from './memory.js'
import { parseRegistryUrl } from './url.js'

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
export async function openRegistry (url: string, opts: OpenOptions = {}): Promise<Registry> {
  const target = parseRegistryUrl(url)
  switch (target.mode) {
    case 'memory':
      return new MemoryRegistry()
    case 'file': {
      const { FileRegistry } = await import('./file.js')
      return new FileRegistry({ dir: target.dir, resyncMs: opts.resyncMs })
    }
    default: {
      const { RedisRegistry } = await import('./redis.js')
      return new RedisRegistry({ target, log: opts.log, resyncMs: opts.resyncMs, commandTimeout: opts.commandTimeout, reconnectGraceMs: opts.reconnectGraceMs })
    }
  }
}
