// `doorman checker`: runs one checker replica until SIGTERM/SIGINT.
// `doorman checker mode …`: shows or sets the run-time degrade switch in the registry's store.
import { loadConfig, type Config } from '../config/index.js'
import { ConfigError } from '../core/errors.js'
import { createLogger } from '../core/log.js'
import { openRegistry, checkPeriod } from '../registry/index.js'
import { RedisRegistry } from '../registry/redis.js'
import { RedisCoordinator } from './coordinator.js'
import { Checker, decisions, defaultReplicaId } from './index.js'
import { CheckerAdmin } from './admin.js'
import { GLOBAL_SCOPE, MODES, SCOPE, isMode } from './policy.js'
import { TargetsError, TargetsFile } from './targets.js'
import { CheckerMetrics } from './metrics.js'

const USAGE = `usage: doorman checker                     run a checker replica (settings: DOORMAN_CHECK_*)
       doorman checker mode                show the run-time mode table
       doorman checker mode MODE           set the mode everywhere (${MODES.join(', ')})
       doorman checker mode SCOPE MODE     set it for a service, service/cluster, org:NAME or env:NAME
       doorman checker mode SCOPE --clear  remove a scope's entry
`

async function sharedRegistry (cfg: Readonly<Config>): Promise<RedisRegistry> {
  const registry = await openRegistry(cfg.registry, { commandTimeout: 2000, resyncMs: Math.max(250, Math.floor(cfg.registryTtl / 3)), checkMs: checkPeriod(cfg.registryTtl) })
  if (!(registry instanceof RedisRegistry)) {
    void registry.close()
    throw new ConfigError('DOORMAN_REGISTRY', 'DOORMAN_REGISTRY: doorman checker needs the registry the sidecars share; expected redis://…, rediss://…, redis+sentinel://… or redis+cluster://… (memory is one process\'s own)')
  }
  return registry
}

export async function command (args: string[]): Promise<number> {
  if (args.includes('-h') || args.includes('--help')) { process.stdout.write(USAGE); return 0 }
  if (args[0] === 'mode') return await modeCommand(args.slice(1))
  if (args.length > 0) {
    process.stderr.write(`doorman checker: unexpected argument ${JSON.stringify(args[0])}\n${USAGE}`)
    return 1
  }
  const cfg = loadConfig()
  const log = createLogger(cfg.logLevel).child({ component: 'checker' })
  const metrics = new CheckerMetrics()
  let targets: TargetsFile | undefined
  if (cfg.checkTargets !== '') {
    const file = new TargetsFile({
      path: cfg.checkTargets,
      onError: (message) => { log.error({ file: cfg.checkTargets, error: message }, 'targets file refused: the last good one stays in force') },
      onLoad: (set) => { log.info({ file: cfg.checkTargets, version: set.version, services: set.services.length, instances: set.services.reduce((n, s) => n + s.instances.length, 0) }, 'targets file loaded') }
    })
    try {
      await file.load()
    } catch (err) {
      if (err instanceof TargetsError) throw new ConfigError('DOORMAN_CHECK_TARGETS', `DOORMAN_CHECK_TARGETS: ${err.message}`)
      throw err
    }
    targets = file
    metrics.readings.targetsFile = () => ({ ok: file.error === null, refused: file.refused, version: file.current.version })
  }
  const registry = await sharedRegistry(cfg)
  registry.onStatus((up) => { if (up) log.info('registry reachable'); else log.warn('registry unreachable') })
  const checker = new Checker({
    registry,
    coordinator: new RedisCoordinator(registry),
    id: cfg.checkReplicaId !== '' ? cfg.checkReplicaId : defaultReplicaId(),
    group: cfg.checkGroup,
    canary: cfg.checkCanary,
    exclude: cfg.checkExclude,
    interval: cfg.checkInterval,
    timeout: cfg.checkTimeout,
    failures: cfg.checkFailures,
    successes: cfg.checkSuccesses,
    maxEject: cfg.checkMaxEject,
    mode: cfg.checkMode,
    concurrency: cfg.checkConcurrency,
    replicaTtl: cfg.registryTtl,
    log,
    metrics,
    ...(targets !== undefined ? { targets } : {})
  })
  const admin = new CheckerAdmin(checker)
  try {
    const port = await admin.listen(cfg.adminPort, cfg.bindHost)
    log.info({ admin: port, replica: checker.id }, 'checker admin listening')
  } catch (err) {
    log.fatal({ err }, 'checker could not start')
    await registry.close()
    return 1
  }
  checker.start()
  const sig = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', resolve)
    process.once('SIGINT', resolve)
  })
  log.info({ signal: sig }, 'signal received: stopping')
  await checker.stop()
  await admin.close()
  await registry.close()
  return 0
}

async function modeCommand (args: string[]): Promise<number> {
  const clear = args.includes('--clear')
  const rest = args.filter((a) => a !== '--clear')
  const unknown = rest.find((a) => a.startsWith('-'))
  if (unknown !== undefined || rest.length > 2 || (clear && rest.length !== 1)) {
    process.stderr.write(`${unknown !== undefined ? `doorman checker mode: unknown option ${unknown}\n` : ''}${USAGE}`)
    return 1
  }
  let scope = GLOBAL_SCOPE
  let mode: string | null = null
  if (clear) scope = rest[0]
  else if (rest.length === 1) mode = rest[0]
  else if (rest.length === 2) { scope = rest[0]; mode = rest[1] }
  if (!SCOPE.test(scope)) {
    process.stderr.write(`doorman checker mode: bad scope ${JSON.stringify(scope)}: expected *, a service name, service/cluster, org:NAME or env:NAME\n`)
    return 1
  }
  if (mode !== null && !isMode(mode)) {
    process.stderr.write(`doorman checker mode: bad mode ${JSON.stringify(mode)}: expected one of ${MODES.join(', ')}\n`)
    return 1
  }
  const cfg = loadConfig()
  const registry = await sharedRegistry(cfg)
  try {
    if (!await registry.waitUp(3000)) {
      process.stderr.write('doorman checker mode: the registry is unreachable\n')
      return 1
    }
    const coordinator = new RedisCoordinator(registry)
    if (clear || mode !== null) await coordinator.setMode(scope, clear ? null : mode as (typeof MODES)[number])
    const { table, bad } = await coordinator.modes(cfg.checkMode)
    process.stdout.write(`default (DOORMAN_CHECK_MODE): ${table.fallback}\n`)
    for (const [s, m] of [...table.entries].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) process.stdout.write(`${s}: ${m}\n`)
    for (const b of bad) process.stdout.write(`ignored: ${b}\n`)
    // What each registered service's clusters get, and which entry decided it (the most specific one applies).
    const names = await coordinator.serviceNames()
    const lists = await Promise.all(names.map(async (s) => await registry.list(s)))
    const rows = decisions(table, lists.flat())
    if (rows.length > 0) process.stdout.write('services:\n')
    for (const r of rows) {
      const labels = [r.org !== '' ? `org ${r.org}` : '', r.env !== '' ? `env ${r.env}` : ''].filter((x) => x !== '').join(', ')
      process.stdout.write(`  ${r.service}/${r.cluster}${labels !== '' ? ` (${labels})` : ''}: ${r.mode} (${r.scope === 'default' ? 'DOORMAN_CHECK_MODE' : r.scope})\n`)
    }
    return 0
  } finally {
    await registry.close()
  }
}
