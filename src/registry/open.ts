// openRegistry(): the registry DOORMAN_REGISTRY names. Only the backend in use is loaded: a sidecar on the memory
// registry never loads ioredis (about 8 MB of a sidecar's memory; docs/benchmarks.md).
import type { Logger } from '../core/log.js'
import type { Registry } from './types.js'
import { MemoryRegistry } from './memory.js'
import { parseRegistryUrl } from './url.js'

export interface OpenOptions {
  log?: Logger
  /** File registry: how often each watch re-reads the directory, in milliseconds (at most 1 s). */
  resyncMs?: number
  /** Redis: period of each watch's check for lost messages, in milliseconds (see RedisRegistryOptions.checkMs). */
  checkMs?: number
  /** Longest wait for one Redis command, in milliseconds. */
  commandTimeout?: number
  /** After a Redis reconnect, how long listings never remove instances (see RedisRegistryOptions). */
  reconnectGraceMs?: number
}

/**
 * The period of each Redis watch's check for a registry TTL: three TTLs (45 s at the default 15 s), at least 1 s.
 * Expiries don't wait for it: the heartbeats of a service's live instances sweep the service's expired ones.
 */
export function checkPeriod (ttl: number): number { return Math.max(1000, 3 * ttl) }

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
      return new RedisRegistry({ target, log: opts.log, checkMs: opts.checkMs, commandTimeout: opts.commandTimeout, reconnectGraceMs: opts.reconnectGraceMs })
    }
  }
}
