// The registry: one interface (types.ts), an embedded memory implementation, a shared-directory one and a Redis one.
// openRegistry() (open.ts) picks one from DOORMAN_REGISTRY and loads only that one; this index exports them all.
export * from './types.js'
export { MemoryRegistry } from './memory.js'
export { RedisRegistry } from './redis.js'
export { FileRegistry } from './file.js'
export { ServiceView } from './view.js'
export { parseRegistryUrl, describeTarget, type RegistryTarget, type RedisTarget } from './url.js'
export { openRegistry, checkPeriod, type OpenOptions } from './open.js'
