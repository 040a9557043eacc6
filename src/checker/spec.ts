// Check definitions live in src/check (below the registry, the config and the checker alike).
export * from '../check/spec.js'
