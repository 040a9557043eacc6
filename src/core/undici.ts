// undici's Client and Pool without the rest of undici. The package's index loads all of it (fetch, WebSocket,
// EventSource, cookies, the cache…), and its cookies module reads globalThis.Headers, which makes Node load the undici
// it bundles for fetch: together about 14 MB more than these two classes (docs/benchmarks.md). These are the files
// undici's index itself requires (undici 7 and 8 publish no exports map); the types come from the package.
import { createRequire } from 'node:module'
import type * as Undici from 'undici'

const require = createRequire(import.meta.url)

export const Client = require('undici/lib/dispatcher/client.js') as typeof Undici.Client
export type Client = Undici.Client
export declare namespace Client { export type Options = Undici.Client.Options }
export const Pool = require('undici/lib/dispatcher/pool.js') as typeof Undici.Pool
export type Pool = Undici.Pool
