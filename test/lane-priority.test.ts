// The lane thread's scheduling priority (DOORMAN_LANE_NICE): the lane thread alone runs at the asked nice value,
// the data path keeps the process's; without the SYS_NICE capability doorman starts anyway and says why.
import t from 'tap'
import { readFileSync, readdirSync, existsSync } from 'node:fs'
import { startServer, startDoorman, request } from './helpers/index.js'

/** Nice value of every thread of `pid`, by thread id (from /proc/<pid>/task/<tid>/stat, field 19). */
function threadNice (pid: number): Map<number, number> {
  const out = new Map<number, number>()
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1')
    out.set(Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]))
  }
  return out
}

/** Whether this process holds CAP_SYS_NICE (bit 23 of CapEff). */
function hasSysNice (): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'latin1'))
  return m !== null && (BigInt(`0x${m[1]}`) & (1n << 23n)) !== 0n
}

const linux = process.platform === 'linux'
const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p))

async function lane (t: Tap.Test, env: Record<string, string>, wrap?: string[]): Promise<{ pid: number, nice: Map<number, number>, metrics: string, output: () => string }> {
  const { port } = await startServer(t, (_req, res) => { res.end('ok') })
  const d = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_LOG_LEVEL: 'info', ...env }, { wrap })
  const pid = d.proc.pid as number
  const metrics = (await request(d.admin, { path: '/metrics', timeout: 5000 })).body
  t.equal((await request(d.inbound, { path: '/', timeout: 5000 })).status, 200, 'the data path serves')
  return { pid, nice: threadNice(pid), metrics, output: d.output }
}

t.test('the lane thread alone runs at a lower priority when asked (no privilege needed)', { skip: !linux && 'per-thread nice values are Linux only' }, async (t) => {
  const { pid, nice, metrics } = await lane(t, { DOORMAN_LANE_NICE: '5' })
  t.equal(nice.get(pid), 0, 'the main thread (the data path) keeps its priority')
  t.equal([...nice.values()].filter((n) => n === 5).length, 1, 'exactly one thread, the lane, runs at nice 5')
  t.match(metrics, /^doorman_lane_nice 5$/m, 'the metric shows it')
})

t.test('by default the lane thread runs ahead of the data path where SYS_NICE allows', { skip: (!linux || !hasSysNice()) && 'needs Linux and CAP_SYS_NICE' }, async (t) => {
  const { pid, nice, metrics, output } = await lane(t, {})
  t.equal(nice.get(pid), 0, 'the main thread keeps its priority')
  t.equal([...nice.values()].filter((n) => n === -10).length, 1, 'exactly one thread, the lane, runs at nice -10')
  t.match(metrics, /^doorman_lane_nice -10$/m)
  t.notMatch(output(), /priority not raised/)
})

t.test('without SYS_NICE doorman starts anyway, at its own priority, and says why', { skip: (!linux || !hasSysNice() || setpriv === undefined) && 'needs Linux, CAP_SYS_NICE to drop and setpriv' }, async (t) => {
  const { nice, metrics, output } = await lane(t, {}, [setpriv as string, '--bounding-set', '-sys_nice', '--inh-caps', '-sys_nice'])
  t.same([...new Set(nice.values())], [0], 'no thread changed its priority')
  t.match(metrics, /^doorman_lane_nice 0$/m)
  t.match(output(), /"reason":"EACCES"[^\n]*lane thread priority not raised/, 'the start-up log says why')
})
