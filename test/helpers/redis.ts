// A private redis-server per suite, on a free loopback port, with persistence off (--save "" --appendonly no):
// the machine's shared Redis is never touched. Also a Sentinel and a three-node Cluster built from the same binary.
// Every process started here is killed in the test's teardown.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import net from 'node:net'
import path from 'node:path'
import { freePort, waitFor } from './index.js'

interface Teardown { teardown: (fn: () => unknown) => void }

/** True when a redis-server binary is on PATH. */
export function haveRedis (): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0
}

/** One RESP command on a fresh connection; resolves with the raw reply text. */
export async function redisCommand (port: number, ...args: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let out = ''
    const timer = setTimeout(() => { s.destroy(); reject(new Error('redis command timed out')) }, 3000)
    s.on('data', (c: Buffer) => {
      out += c.toString()
      if (complete(out)) { clearTimeout(timer); s.end(); resolve(out) }
    })
    s.on('error', (err) => { clearTimeout(timer); reject(err) })
    s.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`)
  })
}

/** True once `text` holds one whole RESP reply. */
function complete (text: string): boolean {
  const end = parse(text, 0)
  return end !== -1
}

function parse (text: string, at: number): number {
  const nl = text.indexOf('\r\n', at)
  if (nl === -1) return -1
  const type = text[at]
  const n = Number(text.slice(at + 1, nl))
  if (type === '+' || type === '-' || type === ':') return nl + 2
  if (type === '$') return n < 0 ? nl + 2 : (text.length >= nl + 2 + n + 2 ? nl + 2 + n + 2 : -1)
  if (type === '*') {
    let p = nl + 2
    for (let i = 0; i < n; i++) { p = parse(text, p); if (p === -1) return -1 }
    return p
  }
  return -1
}

export interface RedisServer {
  port: number
  url: string
  proc: () => ChildProcess
  /** SIGKILLs the server and waits for it to exit. */
  kill: () => Promise<void>
  /** Starts it again on the same port, empty (nothing persisted). */
  restart: () => Promise<void>
}

function launch (args: string[]): { proc: ChildProcess, exited: Promise<void>, output: () => string } {
  const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout?.on('data', (c: Buffer) => { out += c.toString() })
  proc.stderr?.on('data', (c: Buffer) => { out += c.toString() })
  const exited = new Promise<void>((resolve) => { proc.once('exit', () => { resolve() }) })
  return { proc, exited, output: () => out.slice(-2000) }
}

async function killProc (p: { proc: ChildProcess, exited: Promise<void> }): Promise<void> {
  if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL')
  await p.exited
}

async function waitPing (port: number, what: string, output: () => string): Promise<void> {
  await waitFor(`${what} on ${port}`, async () => {
    try { return (await redisCommand(port, 'PING')).startsWith('+PONG') } catch { return false }
  }, 10_000).catch((err: Error) => { throw new Error(`${err.message}\n${output()}`) })
}

/** Starts a private redis-server (killed in teardown). `args` are extra command-line options. */
export async function startRedis (t: Teardown, args: string[] = []): Promise<RedisServer> {
  // A cluster node also listens on port + 10000 (its bus).
  const port = await freePort('127.0.0.1', { bus: args.includes('--cluster-enabled') })
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-redis-'))
  const argv = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', ...args]
  let p = launch(argv)
  t.teardown(async () => { await killProc(p); rmSync(dir, { recursive: true, force: true }) })
  await waitPing(port, 'redis-server', p.output)
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    proc: () => p.proc,
    kill: async () => { await killProc(p) },
    restart: async () => {
      await killProc(p)
      p = launch(argv)
      await waitPing(port, 'redis-server (restarted)', p.output)
    }
  }
}

/** A master and one Sentinel monitoring it as `mymaster` (both killed in teardown). */
export async function startSentinel (t: Teardown): Promise<{ master: RedisServer, sentinelPort: number, url: string }> {
  const master = await startRedis(t)
  const sentinelPort = await freePort()
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-sentinel-'))
  const conf = path.join(dir, 'sentinel.conf')
  writeFileSync(conf, [
    `port ${sentinelPort}`,
    'bind 127.0.0.1',
    `dir ${dir}`,
    `sentinel monitor mymaster 127.0.0.1 ${master.port} 1`,
    'sentinel down-after-milliseconds mymaster 5000',
    ''
  ].join('\n'))
  const p = launch([conf, '--sentinel'])
  t.teardown(async () => { await killProc(p); rmSync(dir, { recursive: true, force: true }) })
  await waitPing(sentinelPort, 'redis sentinel', p.output)
  await waitFor('sentinel knows mymaster', async () => (await redisCommand(sentinelPort, 'SENTINEL', 'get-master-addr-by-name', 'mymaster')).includes(String(master.port)), 10_000)
  return { master, sentinelPort, url: `redis+sentinel://127.0.0.1:${sentinelPort}/mymaster` }
}

/** Three cluster-enabled masters with the 16384 slots spread over them (all killed in teardown). */
export async function startCluster (t: Teardown): Promise<{ ports: number[], url: string }> {
  const nodes: RedisServer[] = []
  for (let i = 0; i < 3; i++) {
    const dir = mkdtempSync(path.join(tmpdir(), 'doorman-cluster-'))
    t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
    nodes.push(await startRedis(t, ['--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf'), '--cluster-node-timeout', '5000']))
  }
  const ports = nodes.map((n) => n.port)
  // Slots: three even ranges, assigned with CLUSTER ADDSLOTSRANGE, then the nodes meet.
  const ranges = [[0, 5460], [5461, 10922], [10923, 16383]]
  for (let i = 0; i < 3; i++) {
    const r = await redisCommand(ports[i], 'CLUSTER', 'ADDSLOTSRANGE', String(ranges[i][0]), String(ranges[i][1]))
    if (!r.startsWith('+OK')) throw new Error(`CLUSTER ADDSLOTSRANGE on ${ports[i]}: ${r}`)
  }
  for (let i = 1; i < 3; i++) await redisCommand(ports[0], 'CLUSTER', 'MEET', '127.0.0.1', String(ports[i]))
  await waitFor('cluster_state:ok on every node', async () => {
    for (const p of ports) {
      const info = await redisCommand(p, 'CLUSTER', 'INFO')
      if (!info.includes('cluster_state:ok') || !info.includes('cluster_known_nodes:3')) return false
    }
    return true
  }, 20_000)
  return { ports, url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}` }
}
