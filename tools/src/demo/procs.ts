// Processes the demo starts: the example app (forked, reporting over IPC) and `doorman run`, each writing its output
// to a log file in the report folder, and the pods that group them under the kubelet stand-in.
import { fork, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { AppStats } from './app.js'
import { Container, Pod, type HttpProbe } from './kubelet.js'

const here = path.dirname(fileURLToPath(import.meta.url))
/** The demo's package root (tools/), from dist/demo or src/demo alike. */
export const ROOT = path.resolve(here, '../..')
/** Child processes always run the built JavaScript: the demo's own (tools/dist). */
export const DIST = path.join(ROOT, 'dist')
/** The sidecar's command line, as the repository's root builds it. */
export const DOORMAN_CLI = path.resolve(ROOT, '..', 'dist', 'cli.js')

/** Ports handed out in this run: the kernel may give the same free port to two asks in a row. */
const handedOut = new Set<number>()
/**
 * Listeners' ports come from below Linux's ephemeral range (32768–60999 by default), so that no client connection of
 * the demo's own load can be given one as its local port between this check and the child's listen.
 */
const LOW = 20_000
const HIGH = 32_000

async function bindable (port: number): Promise<number | null> {
  const s = net.createServer()
  const ok = await new Promise<boolean>((resolve) => {
    s.once('error', () => { resolve(false) })
    s.listen(port, '127.0.0.1', () => { resolve(true) })
  })
  if (!ok) return null
  const got = (s.address() as net.AddressInfo).port
  await new Promise((resolve) => { s.close(resolve) })
  return got
}

/**
 * A port that was free a moment ago and that no earlier call of this run handed out (the app and doorman must keep
 * theirs across restarts, so each child gets its own, fixed one).
 */
export async function freePort (): Promise<number> {
  for (let i = 0; ; i++) {
    const port = await bindable(i < 50 ? LOW + Math.floor(Math.random() * (HIGH - LOW)) : 0)
    if (port !== null && !handedOut.has(port)) {
      handedOut.add(port)
      return port
    }
  }
}

/** Opens (appending) a log file for a child's stdout and stderr. */
function logFd (logDir: string, name: string): number {
  fs.mkdirSync(logDir, { recursive: true })
  return fs.openSync(path.join(logDir, `${name}.log`), 'a')
}

export interface AppSettings {
  name: string
  port: number
  downstream: string
  workers: number
  executor: number
  startupMs: number
  logDir: string
  /** The stall window of the app's own progress-style `/health/live`. */
  stallMs?: number
}

/** Forks the example app; its stats messages go to `onStats`. */
export function startApp (s: AppSettings, onStats: (st: AppStats) => void): ChildProcess {
  const fd = logFd(s.logDir, s.name)
  const child = fork(path.join(DIST, 'demo', 'app.js'), [
    '--name', s.name, '--port', String(s.port), '--downstream', s.downstream,
    '--workers', String(s.workers), '--executor', String(s.executor), '--startup-ms', String(s.startupMs), '--stats-ms', '100',
    '--stall-ms', String(s.stallMs ?? 3000)
  ], { stdio: ['ignore', fd, fd, 'ipc'], env: {} })
  fs.closeSync(fd)
  child.on('message', (m: { type?: string }) => { if (m.type === 'stats') onStats(m as AppStats) })
  // A kill while a message is in flight can raise EPIPE on the channel: the container's exit is what matters.
  child.on('error', () => {})
  return child
}

export interface DoormanSettings {
  name: string
  appPort: number
  inboundPort: number
  adminPort: number
  outboundPort?: number
  logDir: string
  env: Record<string, string>
}

/** Spawns `doorman run` with its settings in its environment (and nothing else from the demo's). */
export function startDoorman (s: DoormanSettings): ChildProcess {
  const fd = logFd(s.logDir, s.name)
  const child = spawn(process.execPath, [DOORMAN_CLI, 'run'], {
    stdio: ['ignore', fd, fd],
    env: {
      DOORMAN_BIND_HOST: '127.0.0.1',
      DOORMAN_LOG_LEVEL: 'warn',
      DOORMAN_APP_PORT: String(s.appPort),
      DOORMAN_INBOUND_PORT: String(s.inboundPort),
      DOORMAN_ADMIN_PORT: String(s.adminPort),
      DOORMAN_OUTBOUND_PORT: String(s.outboundPort ?? 0),
      ...s.env
    }
  })
  fs.closeSync(fd)
  child.on('error', () => {})
  return child
}

/** A doorman's `/state` from its lane (the fields a caller reads), or null when it does not answer within 400 ms. */
export async function laneState<T> (adminPort: number): Promise<T | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${adminPort}/state`, { signal: AbortSignal.timeout(400) })
    return await res.json() as T
  } catch {
    return null
  }
}

/** One counter from a lane's /metrics (summed over its series matching `labels`), or null when it can't be read. */
export async function laneCounter (adminPort: number, name: string, labels = ''): Promise<number | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(2000) })
    const text = await res.text()
    let n = 0
    for (const line of text.split('\n')) if (line.startsWith(`${name}{`) && line.includes(labels)) n += Number(line.slice(line.lastIndexOf(' ') + 1))
    return n
  } catch {
    return null
  }
}

export interface ProbeTimings {
  periodMs: number
  timeoutMs: number
  failureThreshold: number
}

/** The example app's probes as a pod spec would write them, pointed at `port` and `paths`. */
export function appProbes (port: number, t: ProbeTimings, paths: { startup: string, liveness: string, readiness: string }): { startup: HttpProbe, liveness: HttpProbe, readiness: HttpProbe } {
  return {
    // A startup probe holds liveness off while the app boots (without one, a slow start is a restart loop).
    startup: { port, path: paths.startup, periodMs: 250, timeoutMs: t.timeoutMs, failureThreshold: 120 },
    liveness: { port, path: paths.liveness, periodMs: t.periodMs, timeoutMs: t.timeoutMs, failureThreshold: t.failureThreshold },
    readiness: { port, path: paths.readiness, periodMs: t.periodMs, timeoutMs: t.timeoutMs, failureThreshold: 1 }
  }
}

/** Live readings of one pod for the timelines. */
export class PodWatch {
  stats: AppStats | null = null
  /** Highest busy count reported since the last take. */
  peakBusy = 0
  /** Slowest liveness probe of the app container since the last take, and whether one failed. */
  probeMs: number | null = null
  probeFailed = false

  onStats = (st: AppStats): void => {
    this.stats = st
    if (st.busy > this.peakBusy) this.peakBusy = st.busy
  }

  onProbe = (r: { ms: number, ok: boolean }): void => {
    this.probeMs = Math.max(this.probeMs ?? 0, r.ms)
    if (!r.ok) this.probeFailed = true
  }

  take (): { busy: number, probeMs: number | null, probeFailed: boolean } {
    const out = { busy: Math.max(this.peakBusy, this.stats?.busy ?? 0), probeMs: this.probeMs, probeFailed: this.probeFailed }
    this.peakBusy = this.stats?.busy ?? 0
    this.probeMs = null
    this.probeFailed = false
    return out
  }
}

export { Container, Pod }
