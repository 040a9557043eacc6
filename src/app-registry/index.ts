// The app's own registry (DOORMAN_APP_REGISTRY): opened by kind, loading only that kind's client.
import type { Logger } from '../core/log.js'
import type { AppRegistry } from './types.js'
import { parseZooKeeperUrl } from './url.js'

export type { AppRegistry, AppEntry, AppRegistryStatus } from './types.js'
export { RegistrationGate, SETTLE_MS } from './gate.js'

export interface OpenOptions {
  /** This pod's address as the app registers it. */
  host: string
  /** The app's port. */
  port: number
  services: readonly string[]
  log: Logger
}

/** The app registry DOORMAN_APP_REGISTRY names, or null when it names none. */
export async function openAppRegistry (url: string, opts: OpenOptions): Promise<AppRegistry | null> {
  if (url === '') return null
  const target = parseZooKeeperUrl(url)
  // The config has checked the URL; anything else is a programming error.
  if (target === null) throw new Error(`not an app registry URL: ${url}`)
  const { ZooKeeperAppRegistry } = await import('./zookeeper.js')
  return new ZooKeeperAppRegistry({ target, host: opts.host, port: opts.port, services: opts.services, log: opts.log })
}
