// A private ZooKeeper per suite (Debian's `zookeeper` package, run as a standalone server): its own data directory
// under a tmp dir, a free loopback port, polled until it answers `ruok` with `imok`, killed in teardown. The machine's
// own ZooKeeper service, if any, is never touched.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import net from 'node:net'
import path from 'node:path'
import { freePort, waitFor } from './index.js'

interface Teardown { teardown: (fn: () => unknown) => void }

const JAR = '/usr/share/java/zookeeper.jar'

/** True when Debian's zookeeper package and a Java runtime are installed. */
export function haveZooKeeper (): boolean {
  return existsSync(JAR) && spawnSync('java', ['-version'], { stdio: 'ignore' }).status === 0
}

/** One four-letter command (`ruok`, `srvr`); resolves with the reply, or '' when nothing answers. */
export async function fourLetters (port: number, cmd: string): Promise<string> {
  return await new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    let out = ''
    const timer = setTimeout(() => { s.destroy(); resolve(out) }, 1000)
    s.on('data', (c: Buffer) => { out += c.toString() })
    s.on('close', () => { clearTimeout(timer); resolve(out) })
    s.on('error', () => {})
    s.write(cmd)
  })
}

export interface ZooKeeperServer {
  port: number
  /** `127.0.0.1:<port>`, as clients take it. */
  connect: string
  /** DOORMAN_APP_REGISTRY for Dubbo's root on it. */
  url: string
  proc: () => ChildProcess
  /** SIGKILLs the server (an outage) and waits for it to exit; its data stays. */
  stop: () => Promise<void>
  /** Starts it again on the same port and data: sessions still within their timeout survive, as in production. */
  start: () => Promise<void>
}

/** Starts a private ZooKeeper (killed in teardown). */
export async function startZooKeeper (t: Teardown): Promise<ZooKeeperServer> {
  const port = await freePort()
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-zk-'))
  const cfg = path.join(dir, 'zoo.cfg')
  writeFileSync(cfg, [
    'tickTime=2000', // sessions of 4 s to 40 s (Dubbo asks for 60 s, which the server lowers to 40 s)
    `dataDir=${path.join(dir, 'data')}`,
    `clientPort=${port}`,
    'clientPortAddress=127.0.0.1',
    'admin.enableServer=false',
    '4lw.commands.whitelist=ruok,srvr',
    ''
  ].join('\n'))
  // A small, quick JVM: the server holds a few znodes. No fsync per write: the data survives a killed server in the
  // page cache, which is all an outage test needs.
  const argv = ['-Xmx128m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Dzookeeper.forceSync=no', '-cp', JAR, 'org.apache.zookeeper.server.ZooKeeperServerMain', cfg]
  let proc: ChildProcess | null = null
  let exited: Promise<void> = Promise.resolve()
  let out = ''
  const launch = async (what: string): Promise<void> => {
    const p = spawn('java', argv, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    proc = p
    p.stdout?.on('data', (c: Buffer) => { out = (out + c.toString()).slice(-4000) })
    p.stderr?.on('data', (c: Buffer) => { out = (out + c.toString()).slice(-4000) })
    exited = new Promise((resolve) => { p.once('exit', () => { resolve() }) })
    await waitFor(`${what} on ${port}`, async () => {
      if (p.exitCode !== null) throw new Error(`zookeeper exited: ${out}`)
      return (await fourLetters(port, 'ruok')) === 'imok'
    }, 30_000, 100)
  }
  const kill = async (): Promise<void> => {
    if (proc !== null && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    await exited
  }
  t.teardown(async () => { await kill(); rmSync(dir, { recursive: true, force: true }) })
  await launch('zookeeper')
  return {
    port,
    connect: `127.0.0.1:${port}`,
    url: `zookeeper://127.0.0.1:${port}/dubbo`,
    proc: () => proc as unknown as ChildProcess,
    stop: kill,
    start: async () => { await kill(); await launch('zookeeper (restarted)') }
  }
}

/** ZooKeeper's `exists` request (OpCode.exists in its wire protocol). */
export const OP_EXISTS = 3

export interface ZooKeeperGate {
  /** DOORMAN_APP_REGISTRY through the gate, for Dubbo's root. */
  url: string
  /** True once the request waited for has arrived and is held. */
  readonly holding: boolean
  /** Sends what was held, and lets everything through from then on. */
  release: () => void
}

/**
 * A TCP relay in front of `zk` that holds, once, the first client request of type `op` for `znode` (and everything
 * the client sends after it, in order) until release(): a test can then change the tree between a client's request
 * and the server's reading of it. ZooKeeper's framing: a 4-byte length, then (after the session's connect request)
 * xid, type, and for path requests the path as a length-prefixed string.
 */
export async function gateZooKeeper (t: Teardown, zk: ZooKeeperServer, op: number, znode: string): Promise<ZooKeeperGate> {
  let holding = false
  let released = false
  const flushes: Array<() => void> = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect(zk.port, '127.0.0.1')
    sockets.add(client)
    sockets.add(upstream)
    client.on('error', () => { upstream.destroy() })
    upstream.on('error', () => { client.destroy() })
    client.on('close', () => { upstream.destroy() })
    upstream.on('close', () => { client.destroy() })
    upstream.pipe(client)
    let buf = Buffer.alloc(0)
    let first = true
    const held: Buffer[] = []
    let mine = false
    flushes.push(() => { if (mine) { mine = false; for (const f of held.splice(0)) upstream.write(f) } })
    client.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      while (buf.length >= 4 && buf.length >= 4 + buf.readInt32BE(0)) {
        const frame = buf.subarray(0, 4 + buf.readInt32BE(0))
        buf = buf.subarray(frame.length)
        if (!first && !holding && !released && frame.length >= 16 && frame.readInt32BE(8) === op &&
          frame.toString('utf8', 16, 16 + frame.readInt32BE(12)) === znode) {
          holding = true
          mine = true
        }
        first = false
        if (mine) held.push(Buffer.from(frame))
        else upstream.write(frame)
      }
    })
  })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close() })
  const port = (server.address() as net.AddressInfo).port
  return {
    url: `zookeeper://127.0.0.1:${port}/dubbo`,
    get holding () { return holding },
    release: () => { released = true; holding = false; for (const f of flushes) f() }
  }
}
