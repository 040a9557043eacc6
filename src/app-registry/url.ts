// DOORMAN_APP_REGISTRY's URL, parsed without loading any registry client (the config reads it).

export interface ZooKeeperTarget {
  /** `host:port,host:port`, as the client takes it. */
  connect: string
  /** The Dubbo root, `/dubbo` unless the URL's path says otherwise. */
  root: string
  /** The app's Dubbo port when the URL gives one (`?port=20880`), else undefined (the app's port). */
  port?: number
}

const ZK_URL = /^zookeeper:\/\/([^/?#\s]+)(\/[^?#\s]*)?(?:\?(\S*))?$/
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/
const NODE = /^[^/\s]+$/

/** Parses DOORMAN_APP_REGISTRY's `zookeeper://…`; null when it is not one. */
export function parseZooKeeperUrl (url: string): ZooKeeperTarget | null {
  const m = ZK_URL.exec(url.trim())
  if (m === null) return null
  const hosts = m[1].split(',')
  if (!hosts.every((h) => HOST_PORT.test(h))) return null
  const root = m[2] === undefined || m[2] === '/' ? '/dubbo' : m[2].replace(/\/+$/, '')
  if (!root.split('/').slice(1).every((p) => NODE.test(p))) return null
  let port: number | undefined
  for (const pair of (m[3] ?? '').split('&')) {
    if (pair === '') continue
    const [k, v] = pair.split('=')
    if (k !== 'port' || v === undefined || !/^\d{1,5}$/.test(v) || Number(v) < 1 || Number(v) > 65535) return null
    port = Number(v)
  }
  return { connect: hosts.map((h) => h.includes(':') && !h.endsWith(']') ? h : `${h}:2181`).join(','), root, port }
}
