// Node's http module without an ES module facade. `import http from 'node:http'` makes Node build the module's ESM
// namespace, which reads every export, and reading `WebSocket`, `CloseEvent` or `MessageEvent` loads the undici that
// Node bundles for fetch: about 15 MB of memory in every thread that does it (Node 24 and 26; docs/benchmarks.md).
// process.getBuiltinModule returns the module's exports as they are, so those stay unread.
export const http = process.getBuiltinModule('node:http')

/** Clears a client write-stall timer (DOORMAN_CLIENT_WRITE_TIMEOUT); returns null to store in its place. */
export function clearStall (timer: NodeJS.Timeout | null): null {
  if (timer !== null) clearTimeout(timer)
  return null
}
