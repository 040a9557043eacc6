// The HTTP/2 soak: what careless and hostile HTTP/2 peers cost doorman, beside a well-behaved client. doorman runs as
// a pod runs it (a memory cgroup with the injector's default 256 MiB limit, where the machine allows one). Phases:
//   baseline      a good client (node:http2, one session, calls one after another) alone: its latency;
//   idle flood    3,000 HTTP/2 connections that stay open doing nothing (half send the preface alone, half finish
//                 one request first), beside the good client;
//   rapid reset   20 connections opening streams and resetting them at once (CVE-2023-44487), beside the good client;
//   after         the timeouts pass: every flood connection must be gone.
// Printed: the good client's p50/p99 in each phase, doorman's RSS (peak) and the connections open; checked: RSS under
// the pod's limit, no connection left once the headers and idle timeouts have passed.
import net from 'node:net'
import http2 from 'node:http2'
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import type { Options, Section, Check } from './section.js'
import { MemoryCgroup, startApp, startDoorman, procMemory, sleep, table, fmt, percentile, median } from './lib.js'

const LIMIT_MIB = 256
const IDLE_CONNECTIONS = 3000
const RESET_CONNECTIONS = 20
const HEADERS_TIMEOUT_S = 5
const IDLE_TIMEOUT_S = 10
const MIB = 1024 * 1024

// The few frames the flood sends, by hand (RFC 9113 §4.1), so that nothing between the bench and the wire tidies them.
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')
function frame (type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9)
  h.writeUIntBE(payload.length, 0, 3)
  h[3] = type
  h[4] = flags
  h.writeUInt32BE(stream, 5)
  return Buffer.concat([h, payload])
}
/** A GET's header block: literals without indexing or Huffman coding (RFC 7541 §6.2.2). */
function getBlock (path: string): Buffer {
  const parts: Buffer[] = []
  for (const [n, v] of [[':method', 'GET'], [':scheme', 'http'], [':path', path], [':authority', 'app']]) {
    parts.push(Buffer.from([0, n.length]), Buffer.from(n), Buffer.from([v.length]), Buffer.from(v))
  }
  return Buffer.concat(parts)
}
const SETTINGS_FRAME = frame(4, 0, 0, Buffer.alloc(0))
const SETTINGS_ACK = frame(4, 1, 0, Buffer.alloc(0))
const GET_BLOCK = getBlock('/')
const RST_CANCEL = Buffer.from([0, 0, 0, 8])

async function connect (port: number): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1')
  s.on('error', () => {})
  await new Promise<void>((resolve) => { s.once('connect', resolve); s.once('error', () => { resolve() }) })
  return s
}

/** The good client: calls on one session, one after another, until stopped (a new session if doorman closed it, as
 * gRPC clients reconnect); latencies in ms. */
function goodClient (port: number): { stop: () => Promise<number[]>, failures: () => number } {
  const open = (): http2.ClientHttp2Session => {
    const s = http2.connect(`http://127.0.0.1:${port}`)
    s.on('error', () => {})
    return s
  }
  let session = open()
  const ms: number[] = []
  let failures = 0
  let running = true
  const loop = (async () => {
    while (running) {
      if (session.closed || session.destroyed) session = open()
      const t0 = performance.now()
      const ok = await new Promise<boolean>((resolve) => {
        const req = session.request({ ':path': '/' })
        req.setTimeout(10_000, () => { req.close(); resolve(false) })
        req.on('response', () => {})
        req.on('data', () => {})
        req.on('end', () => { resolve(true) })
        req.on('error', () => { resolve(false) })
        req.end()
      })
      if (ok) ms.push(performance.now() - t0)
      else failures++
      await sleep(5)
    }
  })()
  return {
    stop: async () => { running = false; await loop; session.close(); return ms.splice(0) },
    failures: () => failures
  }
}

async function openConnections (admin: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text()
  return Number(/^doorman_connections_open\{lane="inbound"\} (\S+)$/m.exec(text)?.[1] ?? NaN)
}

export const h2SoakSection: Section = {
  name: 'h2soak',
  title: `HTTP/2 soak: ${IDLE_CONNECTIONS} idle connections and a rapid-reset run beside a well-behaved client`,
  async run (opts: Options): Promise<Check[]> {
    const group = MemoryCgroup.create(`doorman-bench-h2soak-${process.pid}-${Date.now()}`, LIMIT_MIB * MIB) ?? undefined
    const app = await startApp()
    const doorman = await startDoorman(app.port, { DOORMAN_HEADERS_TIMEOUT: `${HEADERS_TIMEOUT_S}s`, DOORMAN_IDLE_TIMEOUT: `${IDLE_TIMEOUT_S}s` }, [], group)
    const pid = doorman.proc.pid as number
    const flood: net.Socket[] = []
    const rows: string[][] = []
    const phaseSeconds = Math.max(4, opts.duration * 2)
    let peak = 0
    let rssPeakTimer: NodeJS.Timeout | null = null
    const watchRss = (): void => { peak = Math.max(peak, procMemory(pid).rss, group?.usage() ?? 0) }
    let leftAfter = NaN
    let openAtPeak = 0
    let resets = 0
    let failures = 0
    try {
      rssPeakTimer = setInterval(watchRss, 100)
      const idleRss = procMemory(pid).rss
      const phase = async (name: string, during: () => Promise<void>): Promise<void> => {
        const good = goodClient(doorman.port)
        await during()
        const ms = await good.stop()
        failures += good.failures()
        rows.push([name, String(ms.length), fmt(median(ms), 2), fmt(percentile(ms, 99), 2), fmt(Math.max(...ms), 1), fmt(procMemory(pid).rss / MIB, 1), String(await openConnections(doorman.admin))])
      }
      await phase('baseline: the good client alone', async () => { await sleep(phaseSeconds * 1000) })
      await phase(`${IDLE_CONNECTIONS} idle HTTP/2 connections open`, async () => {
        for (let i = 0; i < IDLE_CONNECTIONS; i++) {
          const s = await connect(doorman.port)
          // Half send the preface alone (the headers timeout ends them), half finish one request first (the idle one).
          s.write(Buffer.concat(i % 2 === 0 ? [PREFACE, SETTINGS_FRAME] : [PREFACE, SETTINGS_FRAME, SETTINGS_ACK, frame(1, 0x5, 1, GET_BLOCK)]))
          s.resume()
          flood.push(s)
        }
        openAtPeak = await openConnections(doorman.admin)
        await sleep(phaseSeconds * 1000)
      })
      await phase(`rapid reset: ${RESET_CONNECTIONS} connections, HEADERS + RST_STREAM`, async () => {
        // In a process of its own: the flood's writing must not stall the good client's event loop.
        const child = fork(fileURLToPath(import.meta.url), ['flood', String(doorman.port), String(phaseSeconds)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
        const [msg] = await once(child, 'message') as [{ resets: number }]
        resets = msg.resets
        await once(child, 'exit')
      })
      // Every flood connection is doorman's to end: the bench closes none of them.
      const waitS = Math.max(HEADERS_TIMEOUT_S, IDLE_TIMEOUT_S) + 3
      await phase(`after ${waitS} s (headers timeout ${HEADERS_TIMEOUT_S} s, idle timeout ${IDLE_TIMEOUT_S} s)`, async () => { await sleep(waitS * 1000) })
      leftAfter = flood.filter((s) => !s.destroyed && !s.readableEnded).length
      console.log(`\ndoorman idle RSS ${fmt(idleRss / MIB, 1)} MiB; ${group !== undefined ? `in a memory cgroup limited to ${LIMIT_MIB} MiB` : 'no memory cgroup could be made here: V8 sized its heaps from the machine'}; ${resets} streams opened and reset by the flood.`)
    } finally {
      if (rssPeakTimer !== null) clearInterval(rssPeakTimer)
      for (const s of flood) s.destroy()
      await doorman.stop()
      app.proc.kill()
      group?.close()
    }
    console.log(table(['phase', 'good calls', 'p50 ms', 'p99 ms', 'max ms', 'doorman RSS MiB', 'connections open'], rows))
    console.log(`peak doorman RSS ${fmt(peak / MIB, 1)} MiB; ${openAtPeak} connections open at the flood's height; ${leftAfter} flood connections still open once the timeouts passed; ${failures} good calls failed.`)
    return [
      { what: `doorman RSS peak under the pod's ${LIMIT_MIB} MiB limit through the soak`, value: peak / MIB, ok: (v) => v < LIMIT_MIB, unit: 'MiB' },
      { what: 'flood connections left once the timeouts passed', value: leftAfter, ok: (v) => v === 0 },
      { what: 'good calls failed during the soak', value: failures, ok: (v) => v === 0 }
    ]
  }
}

/**
 * The rapid-reset flood (run as `h2-soak.js flood PORT SECONDS` in a child process): RESET_CONNECTIONS connections
 * writing HEADERS + RST_STREAM pairs, 100 per connection every 10 ms while the socket takes them, for SECONDS; doorman
 * ends the connections (rapid-reset bound, idle timeout), the flood only stops writing.
 */
async function flood (port: number, seconds: number): Promise<number> {
  const socks = await Promise.all(Array.from({ length: RESET_CONNECTIONS }, async () => await connect(port)))
  for (const s of socks) { s.write(Buffer.concat([PREFACE, SETTINGS_FRAME, SETTINGS_ACK])); s.resume() }
  const ids = socks.map(() => 1)
  let resets = 0
  const until = performance.now() + seconds * 1000
  while (performance.now() < until) {
    for (let i = 0; i < socks.length; i++) {
      const s = socks[i]
      if (s.destroyed || s.writableLength > 1 << 20) continue
      const batch: Buffer[] = []
      for (let k = 0; k < 100; k++) {
        const id = ids[i]
        ids[i] += 2
        batch.push(frame(1, 0x5, id, GET_BLOCK), frame(3, 0, id, RST_CANCEL))
        resets++
      }
      s.write(Buffer.concat(batch))
    }
    await sleep(10)
  }
  // The connections stay to doorman to end; the flood leaves with its process.
  return resets
}

if (process.argv[2] === 'flood' && process.send !== undefined) {
  const resets = await flood(Number(process.argv[3]), Number(process.argv[4]))
  process.send({ resets }, () => { process.exit(0) })
}
