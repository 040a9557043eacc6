// `doorman instances SERVICE [--json]`: what the registry holds for a service. A table for people; with --json an
// array of {id, address, zone, cluster, state, weight, warmup}.
import { loadConfig } from '../config/index.js'
import { openRegistry, type Instance } from './index.js'
import { SERVICE_NAME } from './types.js'

const USAGE = 'usage: doorman instances SERVICE [--json]\n'

/** The contract's JSON shape of one instance. */
export function instanceJson (i: Instance): Record<string, unknown> {
  return {
    id: i.id,
    address: i.address,
    zone: i.zone,
    cluster: i.cluster,
    state: i.state,
    weight: i.weight,
    warmup: { progress: i.warmup.progress, window: i.warmup.window, aggression: i.warmup.aggression, minWeight: i.warmup.minWeight },
    adminPort: i.adminPort,
    registeredAt: new Date(i.registeredAt).toISOString(),
    updatedAt: new Date(i.updatedAt).toISOString(),
    ...(i.source !== undefined ? { source: i.source } : {}),
    ...(i.org !== undefined ? { org: i.org } : {}),
    ...(i.env !== undefined ? { env: i.env } : {}),
    ...(i.check !== undefined ? { check: i.check } : {})
  }
}

function age (ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 120) return `${s}s`
  if (s < 7200) return `${Math.round(s / 60)}m`
  return `${Math.round(s / 3600)}h`
}

/** A plain-text table of instances. */
export function instanceTable (list: Instance[], now = Date.now()): string {
  const rows = [['ID', 'ADDRESS', 'ZONE', 'CLUSTER', 'STATE', 'WEIGHT', 'WARMUP', 'AGE', 'CHECK']]
  for (const i of list) {
    rows.push([i.id, i.address, i.zone === '' ? '-' : i.zone, i.cluster, i.state, `${Math.round(i.weight)}%`, i.warmup.window === 0 ? 'off' : `${Math.round(i.warmup.progress * 100)}%`, age(now - i.registeredAt), (i.check?.type ?? (i.adminPort > 0 ? 'lane' : 'connect')) + (i.source === 'static' ? ' (static)' : '')])
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)))
  return rows.map((r) => r.map((v, c) => v.padEnd(widths[c])).join('  ').trimEnd()).join('\n') + '\n'
}

export async function command (args: string[]): Promise<number> {
  const json = args.includes('--json')
  const rest = args.filter((a) => a !== '--json')
  if (rest.includes('-h') || rest.includes('--help')) { process.stdout.write(USAGE); return 0 }
  const unknown = rest.find((a) => a.startsWith('-'))
  if (unknown !== undefined || rest.length !== 1) {
    process.stderr.write(unknown !== undefined ? `doorman instances: unknown option ${unknown}\n${USAGE}` : USAGE)
    return 1
  }
  const service = rest[0].toLowerCase()
  if (!SERVICE_NAME.test(service)) {
    process.stderr.write(`doorman instances: bad service name ${JSON.stringify(rest[0])}\n`)
    return 1
  }
  const cfg = loadConfig()
  const registry = await openRegistry(cfg.registry, { commandTimeout: 5000 })
  try {
    if (registry.kind === 'memory') {
      process.stderr.write('doorman instances: DOORMAN_REGISTRY is memory: each doorman process keeps its own registry, so there is nothing to list from here (set DOORMAN_REGISTRY to a redis:// URL to share one)\n')
    }
    if (!await registry.waitUp(5000)) {
      process.stderr.write('doorman instances: the registry is unreachable\n')
      return 1
    }
    const list = await registry.list(service)
    process.stdout.write(json ? JSON.stringify(list.map(instanceJson), null, 2) + '\n' : instanceTable(list))
    return 0
  } finally {
    await registry.close()
  }
}
