// Backpressure through both lanes: a client that stops reading makes doorman stop reading the server behind it
// (undici's controller paused), and the whole body arrives once the client reads again (resumed on 'drain').
// The outbound lane also passes a response's trailers on.
import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import { Outbound } from '../src/outbound/index.js'
import { MemoryRegistry } from '../src/registry/index.js'
import { Metrics } from '../src/metrics/index.js'
import { silentLogger } from '../src/core/log.js'
import { startServer, startDoorman, waitFor } from './helpers/index.js'

const CHUNK = 64 * 1024
/** Far more than the socket buffers between the server and the client can hold (loopback buffers grow to a few MB). */
const TOTAL = 128 * 1024 * 1024

/** A server that writes TOTAL bytes of 'x', honouring backpressure, and records how far it got. */
async function bigServer (t: Tap.Test): Promise<{ port: number, state: { written: number, blockedSince: number, finished: boolean } }> {
  const state = { written: 0, blockedSince: 0, finished: false }
  const chunk = Buffer.alloc(CHUNK, 'x')
  const { port } = await startServer(t, (req, res) => {
    res.writeHead(200, { 'content-length': String(TOTAL), 'content-type': 'application/octet-stream' })
    const pump = (): void => {
      state.blockedSince = 0
      while (state.written < TOTAL) {
        state.written += CHUNK
        if (state.written === TOTAL) break
        if (!res.write(chunk)) { state.blockedSince = performance.now(); res.once('drain', pump); return }
      }
      state.finished = true
      res.end(chunk)
    }
    pump()
  })
  return { port, state }
}

/** Asks `port` for the big body without reading, checks the server is held, then reads it all. */
async function holdThenRead (t: Tap.Test, port: number, host: string, state: { written: number, blockedSince: number, finished: boolean }): Promise<void> {
  const sock = net.connect(port, '127.0.0.1')
  t.teardown(() => { sock.destroy() })
  await once(sock, 'connect')
  sock.pause()
  sock.write(`GET /big HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)

  // Held: the server waits for 'drain' and keeps waiting, well short of the whole body.
  await waitFor('the server held at a write', () => state.finished || (state.blockedSince > 0 && performance.now() - state.blockedSince > 500), 30_000)
  t.notOk(state.finished, 'the server could not write the whole body while the client read nothing')
  t.ok(state.written < TOTAL / 2, `the server wrote ${Math.round(state.written / 1048576)} MB of ${TOTAL / 1048576} MB before it was held`)

  // Released: everything arrives, byte for byte.
  let head = ''
  let body = 0
  let bad = 0
  sock.on('data', (c: Buffer) => {
    let from = 0
    if (!head.endsWith('\r\n\r\n')) {
      const s = head + c.toString('latin1')
      const end = s.indexOf('\r\n\r\n')
      if (end < 0) { head = s; return }
      head = s.slice(0, end + 4)
      from = c.length - (s.length - head.length)
    }
    for (let i = from; i < c.length; i += 4096) if (c[i] !== 0x78) bad++
    body += c.length - from
  })
  sock.resume()
  await once(sock, 'end')
  t.match(head, /^HTTP\/1\.1 200 /)
  t.equal(body, TOTAL, 'the whole body arrived')
  t.equal(bad, 0, 'and unchanged')
  t.ok(state.finished)
}

async function outboundLane (t: Tap.Test, service: string, port: number): Promise<number> {
  const registry = new MemoryRegistry()
  t.teardown(async () => { await registry.close() })
  const now = Date.now()
  await registry.register({ id: `${service}-1`, service, cluster: 'default', zone: '', address: `127.0.0.1:${port}`, adminPort: 0, startedAt: now, registeredAt: now, warmup: { window: 0, aggression: 1, minWeight: 10, progress: 1 }, weight: 100, state: 'up', ejected: false, updatedAt: now, rev: 0 }, 60_000)
  const out = new Outbound({ port: 0, registry, metrics: new Metrics({ defaults: false }), log: silentLogger(), upstreamTimeout: 5000, outlier: { failures: 3, ejectTime: 30_000, maxEject: 50 } })
  const lanePort = await out.listen()
  t.teardown(async () => { await out.close() })
  return lanePort
}

t.test('inbound: a client that stops reading holds the app\'s writes; the body arrives whole when it reads again', async (t) => {
  const app = await bigServer(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port) })
  await holdThenRead(t, dm.inbound, 'example.test', app.state)
})

t.test('outbound: an app that stops reading holds the instance\'s writes; the body arrives whole when it reads again', async (t) => {
  const instance = await bigServer(t)
  const lane = await outboundLane(t, 'bulk', instance.port)
  await holdThenRead(t, lane, 'bulk', instance.state)
})

t.test('outbound: trailers are passed on', async (t) => {
  const { port } = await startServer(t, (req, res) => {
    res.writeHead(200, { trailer: 'x-checksum', 'content-type': 'text/plain' })
    res.write('part one,')
    res.addTrailers({ 'x-checksum': 'abc123' })
    res.end('part two')
  })
  const lane = await outboundLane(t, 'trailing', port)
  const res = await new Promise<http.IncomingMessage & { text: string }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: lane, path: '/t', headers: { host: 'trailing' } }, (r) => {
      let text = ''
      r.setEncoding('utf8')
      r.on('data', (c: string) => { text += c })
      r.on('end', () => { resolve(Object.assign(r, { text })) })
    }).on('error', reject)
  })
  t.equal(res.statusCode, 200)
  t.equal(res.text, 'part one,part two')
  t.same(res.trailers, { 'x-checksum': 'abc123' }, 'the trailer arrived')
})
