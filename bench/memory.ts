// The memory section: what a sidecar costs per pod. doorman as a pod runs it (in a memory cgroup of its own with the
// injector's default limit, so V8 sizes its heaps as it would there), idle and after a 200-connection run, beside
// the app it fronts and beside the floor for its design on this runtime: a bare Node server with a worker thread.
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import type { ChildProcess } from 'node:child_process'
import type { Options, Section, Check } from './section.js'
import { Load, MemoryCgroup, ROOT, startApp, startFloor, startDoorman, freePort, procMemory, cpuMicros, sleep, table, fmt, type ProcMemory } from './lib.js'

/** The sidecar container's memory limit the injector sets by default (doorman.io/sidecar-memory-limit). */
const LIMIT_MIB = 256
const CONNECTIONS = 200
const LOAD_SECONDS = 8
/** After start-up, before the idle sample: the lane's first app checks and the start-up garbage are behind it. */
const IDLE_SECONDS = 5
/** After the run, before the last sample: V8's memory reducer starts 8 s after allocation slows down. */
const SETTLE_SECONDS = 15
const TARGET_IDLE = 60
const TARGET_AFTER = 80

const MIB = 1024 * 1024
const mb = (n: number): string => fmt(n / MIB, 1)

/** V8 heap sizes (used or free) of doorman's two threads, from its metrics. */
async function heaps (admin: number): Promise<{ main: number, lane: number }> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text()
  const read = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN)
  return { main: read('nodejs_heap_size_total_bytes'), lane: read('doorman_lane_heap_size_total_bytes') }
}

/** The environment the image sets for doorman (the ENV lines of the Dockerfile's last stage). */
function imageEnv (): Record<string, string> {
  const file = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8')
  const last = file.slice(file.lastIndexOf('\nFROM '))
  const env: Record<string, string> = {}
  for (const line of last.matchAll(/^ENV\s+(.+)$/gm)) {
    for (const pair of line[1].trim().split(/\s+/)) {
      const eq = pair.indexOf('=')
      if (eq > 0) env[pair.slice(0, eq)] = pair.slice(eq + 1)
    }
  }
  return env
}

interface Sample { mem: ProcMemory, charged: number, main: number, lane: number }

/** The floor's memory and the V8 heap of each of its threads. */
async function floorSample (proc: ChildProcess, charged: () => number): Promise<Sample> {
  const mem = procMemory(proc.pid as number)
  const answer = once(proc, 'message') as Promise<[{ main: number, lane: number }]>
  proc.send('heaps')
  const [heaps] = await answer
  return { mem, charged: charged(), ...heaps }
}

async function exited (proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const done = once(proc, 'exit')
  proc.kill()
  await done
}

export const memorySection: Section = {
  name: 'memory',
  title: 'Memory per pod: doorman beside the app and beside the floor (a bare Node server with a worker thread)',
  async run (_opts: Options): Promise<Check[]> {
    const stamp = `${process.pid}-${Date.now()}`
    const groups = ['app', 'floor', 'doorman'].map((name) => MemoryCgroup.create(`doorman-bench-${name}-${stamp}`, LIMIT_MIB * MIB) ?? undefined)
    const [appGroup, floorGroup, doormanGroup] = groups
    const app = await startApp(appGroup)
    // The floor runs with the image's environment too: what is left between the two is doorman's own.
    const floor = await startFloor(floorGroup, imageEnv())
    // As the image runs it (its ENV), outbound lane included; only the ports and the log level are the bench's.
    const doorman = await startDoorman(app.port, { ...imageEnv(), DOORMAN_OUTBOUND_PORT: String(await freePort()) }, [], doormanGroup)
    const load = new Load()
    const pids = { app: app.proc.pid as number, doorman: doorman.proc.pid as number }
    const sample = async (): Promise<Sample> => {
      const mem = procMemory(pids.doorman)
      const charged = doormanGroup?.usage() ?? NaN
      return { mem, charged, ...await heaps(doorman.admin) }
    }
    let idle: Sample, after: Sample, settled: Sample
    let appIdle: ProcMemory, appAfter: ProcMemory, floorIdle: Sample, floorAfter: Sample
    const floorCharged = (): number => floorGroup?.usage() ?? NaN
    let requests = 0
    let cpu = 0
    let bad = 0
    try {
      await sleep(IDLE_SECONDS * 1000)
      appIdle = procMemory(pids.app)
      floorIdle = await floorSample(floor.proc, floorCharged)
      idle = await sample()
      process.stdout.write(`  idle sampled; ${CONNECTIONS} connections for ${LOAD_SECONDS} s through doorman`)
      const cpu0 = cpuMicros(pids.doorman)
      const r = await load.run({ url: `http://127.0.0.1:${doorman.port}/`, connections: CONNECTIONS, duration: LOAD_SECONDS })
      cpu = cpuMicros(pids.doorman) - cpu0
      requests = r.requests
      bad = r.non2xx + r.errors + r.timeouts
      await sleep(1000)
      after = await sample()
      appAfter = procMemory(pids.app)
      process.stdout.write(', then at the floor')
      const f = await load.run({ url: `http://127.0.0.1:${floor.port}/`, connections: CONNECTIONS, duration: LOAD_SECONDS })
      bad += f.non2xx + f.errors + f.timeouts
      await sleep(1000)
      floorAfter = await floorSample(floor.proc, floorCharged)
      process.stdout.write(`, then ${SETTLE_SECONDS} s idle\n`)
      await sleep(SETTLE_SECONDS * 1000)
      settled = await sample()
    } finally {
      load.close()
      await doorman.stop()
      await exited(floor.proc)
      await exited(app.proc)
      for (const g of groups) g?.close()
    }

    const limitSeen = floor.constrainedMemory ?? NaN
    console.log(doormanGroup !== undefined
      ? `\nEach process in a memory cgroup of its own limited to ${LIMIT_MIB} MiB, as the injected sidecar container is; Node saw a limit of ${mb(limitSeen)} MiB (process.constrainedMemory() in the floor).`
      : '\nNo memory cgroup could be made here (this needs root and a memory controller): V8 sized its heaps from the machine\'s memory, as in a pod without a memory limit.')
    const env = Object.entries(imageEnv()).map(([k, v]) => `${k}=${v}`).join(' ')
    console.log(`doorman as the image runs it (${env}; memory registry, outbound lane on); the run: ${requests} requests through doorman, ${fmt(cpu / requests, 1)} µs of doorman's CPU per request.\n`)
    const row = (what: string, m: ProcMemory, a: ProcMemory): string[] => [what, mb(m.rss), mb(m.file), mb(m.anon), mb(a.rss), mb(a.peak)]
    console.log(table(['process', 'idle RSS MiB', 'file-backed', 'anonymous', `after c${CONNECTIONS} RSS`, 'peak RSS'], [
      row('the app (bench/app.ts)', appIdle, appAfter),
      row('floor: bare server + worker thread', floorIdle.mem, floorAfter.mem),
      row('doorman', idle.mem, after.mem)
    ]))
    const col = (s: Sample): string[] => {
      const other = s.mem.anon - s.main - s.lane
      return [mb(s.mem.rss), mb(s.mem.file), mb(s.main), mb(s.lane), mb(other), mb(s.charged)]
    }
    const parts = ['RSS', 'file-backed: the node binary and libraries (code, read-only data)', 'main thread V8 heap', 'lane (worker) thread V8 heap', 'other anonymous: malloc (buffers, parsers, compiler zones), wasm code, stacks', 'charged to the cgroup (what its limit counts)']
    const cols = [col(floorIdle), col(idle), col(floorAfter), col(after), col(settled)]
    console.log('\n' + table(['MiB', 'floor idle', 'doorman idle', `floor after c${CONNECTIONS}`, `doorman after c${CONNECTIONS}`, `doorman ${SETTLE_SECONDS} s later`], parts.map((p, i) => [p, ...cols.map((c) => c[i])])))

    const checks: Check[] = [
      { what: `doorman RSS idle ≤ ${TARGET_IDLE} MiB (floor in the same run: ${mb(floorIdle.mem.rss)})`, value: idle.mem.rss / MIB, ok: (v) => v <= TARGET_IDLE, unit: 'MiB' },
      { what: `doorman RSS after the c${CONNECTIONS} run ≤ ${TARGET_AFTER} MiB (floor after its own run: ${mb(floorAfter.mem.rss)})`, value: after.mem.rss / MIB, ok: (v) => v <= TARGET_AFTER, unit: 'MiB' }
    ]
    if (bad > 0) checks.push({ what: 'no errors or non-2xx answers', value: bad, ok: () => false })
    return checks
  }
}
