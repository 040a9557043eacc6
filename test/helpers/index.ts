// Shared test helpers: real servers on port 0, real child processes, polling with deadlines. Every process or
// server started here is stopped in the test's teardown.
import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import http from 'node:http'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const CLI = path.join(ROOT, 'dist', 'cli.js')

interface Teardown { teardown: (fn: () => unknown) => void }

// Ports handed out come from below Linux's ephemeral range (32768–60999 by default): a port there can be taken as
// the local port of any outgoing connection between this check and the server's listen, and a client that keeps
// reconnecting to a port nothing listens on yet can even connect to itself (TCP simultaneous open) and hold it.
const LOW = 20_000
const HIGH = 32_000
const handedOut = new Set<number>()

async function bindable (port: number, host: string): Promise<number | null> {
  const s = net.createServer()
  const ok = await new Promise<boolean>((resolve) => {
    s.once('error', () => { resolve(false) })
    s.listen(port, host, () => { resolve(true) })
  })
  if (!ok) return null
  const got = (s.address() as net.AddressInfo).port
  await new Promise((resolve) => s.close(resolve))
  return got
}

/**
 * A port that was free a moment ago and that no earlier call of this test file handed out (for servers that can't
 * take port 0, such as redis-server, or that must keep their port across a restart). With `bus`, port + 10000 (a
 * Redis Cluster node's bus port) is free too, and below the ephemeral range as well.
 */
export async function freePort (host = '127.0.0.1', opts: { bus?: boolean } = {}): Promise<number> {
  const high = opts.bus === true ? HIGH - 10_000 : HIGH
  for (let i = 0; ; i++) {
    const port = await bindable(i < 50 ? LOW + Math.floor(Math.random() * (high - LOW)) : 0, host)
    if (port === null || handedOut.has(port)) continue
    if (opts.bus === true && (handedOut.has(port + 10_000) || await bindable(port + 10_000, host) === null)) continue
    handedOut.add(port)
    if (opts.bus === true) handedOut.add(port + 10_000)
    return port
  }
}

/**
 * Polls `fn` until it returns a value, and resolves with it; throws with `what` once the deadline passes. Only
 * undefined, null and false mean "not yet": 0 and '' are values, so a poll on a number or a string must say when it
 * is not there yet (`() => joinedAt > 0 ? joinedAt : undefined`), or it returns at once.
 */
export async function waitFor<T> (what: string, fn: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v !== undefined && v !== null && v !== false) return v as NonNullable<T>
    } catch (err) { last = err }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last !== undefined ? `: ${String(last)}` : ''}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

export interface Response { status: number, headers: http.IncomingHttpHeaders, body: string }

/** One HTTP request on a fresh connection (no agent pooling), resolving with the whole body. */
export async function request (port: number, opts: { path?: string, method?: string, headers?: http.OutgoingHttpHeaders, body?: string | Buffer, host?: string, localAddress?: string, timeout?: number } = {}): Promise<Response> {
  return await new Promise((resolve, reject) => {
    const req = http.request({ host: opts.host ?? '127.0.0.1', port, path: opts.path ?? '/', method: opts.method ?? 'GET', headers: opts.headers, agent: false, localAddress: opts.localAddress, timeout: opts.timeout ?? 30_000 }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }) })
      res.on('error', reject)
    })
    req.on('timeout', () => { req.destroy(new Error('request timed out')) })
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** Sends raw bytes on a new socket and resolves with everything read until the server closes (or timeout). */
export async function rawRequest (port: number, data: string | Buffer, timeoutMs = 5000): Promise<string> {
  return await new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const timer = setTimeout(() => { s.destroy(); resolve(Buffer.concat(chunks).toString()) }, timeoutMs)
    s.on('data', (c: Buffer) => chunks.push(c))
    s.on('end', () => { clearTimeout(timer); s.destroy(); resolve(Buffer.concat(chunks).toString()) })
    s.on('error', (err) => { clearTimeout(timer); if (chunks.length > 0) resolve(Buffer.concat(chunks).toString()); else reject(err) })
    s.write(data)
  })
}

/** An http.Server on 127.0.0.1:0, closed in teardown. */
export async function startServer (t: Teardown, handler: http.RequestListener, setup?: (s: http.Server) => void): Promise<{ server: http.Server, port: number }> {
  const server = http.createServer(handler)
  setup?.(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => { server.closeAllConnections(); await new Promise((resolve) => server.close(resolve)) })
  return { server, port: (server.address() as net.AddressInfo).port }
}

export interface Child {
  proc: ChildProcess
  /** Everything written to stdout and stderr so far. */
  output: () => string
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  kill: (sig?: NodeJS.Signals) => void
}

/** Spawns a node process (killed in teardown if still running). */
export function spawnNode (t: Teardown, args: string[], env: Record<string, string> = {}, opts: { stdin?: string, wrap?: string[] } = {}): Child {
  // `wrap`: a command that execs node in its place (e.g. setpriv dropping a capability), so the pid stays node's.
  const [cmd, ...argv] = [...(opts.wrap ?? []), process.execPath, ...args]
  const proc = spawn(cmd, argv, { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout?.on('data', (c: Buffer) => { out += c.toString() })
  proc.stderr?.on('data', (c: Buffer) => { out += c.toString() })
  if (opts.stdin !== undefined) proc.stdin?.end(opts.stdin)
  else proc.stdin?.end()
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => { resolve({ code, signal }) })
  })
  const kill = (sig: NodeJS.Signals = 'SIGKILL'): void => { if (proc.exitCode === null && proc.signalCode === null) proc.kill(sig) }
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      try { process.kill(proc.pid as number, 'SIGCONT') } catch {}
      proc.kill('SIGKILL')
      await exited
    }
  })
  return { proc, output: () => out, exited, kill }
}

export interface Doorman extends Child {
  inbound: number
  admin: number
  outbound: number
}

/**
 * Starts `doorman run` (the built CLI) in front of an app port, on free ports; resolves once /startupz passes (and
 * /readyz unless `waitReady` is false). A variable given as undefined is left unset: doorman's own default applies.
 */
export async function startDoorman (t: Teardown, env: Record<string, string | undefined>, opts: { waitReady?: boolean, args?: string[], wrap?: string[] } = {}): Promise<Doorman> {
  const inbound = env.DOORMAN_INBOUND_PORT !== undefined ? Number(env.DOORMAN_INBOUND_PORT) : await freePort()
  const admin = env.DOORMAN_ADMIN_PORT !== undefined ? Number(env.DOORMAN_ADMIN_PORT) : await freePort()
  const outbound = env.DOORMAN_OUTBOUND_PORT !== undefined ? Number(env.DOORMAN_OUTBOUND_PORT) : 0
  const all: Record<string, string | undefined> = {
    DOORMAN_BIND_HOST: '127.0.0.1',
    DOORMAN_LOG_LEVEL: 'warn',
    // No warmup window unless a test asks for one: instances register `up`, at full weight, at once.
    DOORMAN_WARMUP: '0',
    ...env,
    DOORMAN_INBOUND_PORT: String(inbound),
    DOORMAN_ADMIN_PORT: String(admin),
    DOORMAN_OUTBOUND_PORT: String(outbound)
  }
  const child = spawnNode(t, opts.args ?? [CLI, 'run'], Object.fromEntries(Object.entries(all).filter((e): e is [string, string] => e[1] !== undefined)), { wrap: opts.wrap })
  let exitedEarly = false
  void child.exited.then(({ code, signal }) => {
    exitedEarly = true
    // A crash (an uncaught error exits 1; an abort or a fault is a signal no test sends) is told with what doorman
    // printed, so a run that fails on it says why rather than only that connections were refused afterwards.
    if (code === 1 || (signal !== null && !['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGQUIT'].includes(signal))) {
      process.stderr.write(`doorman (pid ${String(child.proc.pid)}) exited ${code !== null ? `with code ${code}` : `on ${String(signal)}`}; its output:\n${child.output().slice(-8000)}\n`)
    }
  })
  await waitFor('doorman /startupz', async () => {
    if (exitedEarly) throw new Error(`doorman exited: ${child.output()}`)
    return (await request(admin, { path: '/startupz', timeout: 1000 })).status === 200
  }, 15_000)
  if (opts.waitReady !== false) {
    await waitFor('doorman /readyz', async () => (await request(admin, { path: '/readyz', timeout: 1000 })).status === 200, 15_000)
  }
  return { ...child, inbound, admin, outbound }
}

/** Starts a fixture app (a node script that prints `{"port":N}` on its first stdout line) as a child process. */
export async function startFixtureApp (t: Teardown, script: string, env: Record<string, string> = {}): Promise<Child & { port: number }> {
  const child = spawnNode(t, [path.join(ROOT, 'test', 'fixtures', script)], env)
  const port = await waitFor(`${script} to listen`, () => {
    const m = /\{"port":(\d+)\}/.exec(child.output())
    return m === null ? null : Number(m[1])
  }, 10_000)
  return { ...child, port }
}

/** GET a JSON document. */
export async function getJson<T = Record<string, unknown>> (port: number, p: string): Promise<T> {
  const res = await request(port, { path: p, timeout: 5000 })
  return JSON.parse(res.body) as T
}
