// The checker benchmark's stand-in lanes: a few loopback listeners answering /readyz, which many registry entries
// point at (10,000 instances cost ten sockets, not 10,000 processes). Runs as its own process, reports its ports over
// IPC; a message `{ index, mode }` switches one listener to answering 200 (`ok`), 503 (`sick`) or nothing (`silent`).
import http from 'node:http'

type Mode = 'ok' | 'sick' | 'silent'
const count = Number(process.env.BENCH_LANES ?? 10)
const modes: Mode[] = Array.from({ length: count }, () => 'ok')
const ports: number[] = []
let listening = 0

for (let i = 0; i < count; i++) {
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (_req, res) => {
    const mode = modes[i]
    if (mode === 'silent') return // hold the request: the checker's timeout ends it
    res.writeHead(mode === 'ok' ? 200 : 503, { 'content-type': 'text/plain', 'content-length': 2 })
    res.end(mode === 'ok' ? 'ok' : 'no')
  })
  server.listen(0, '127.0.0.1', () => {
    ports[i] = (server.address() as { port: number }).port
    if (++listening === count) process.send?.({ ports })
  })
}

process.on('message', (m: { index: number, mode: Mode }) => {
  modes[m.index] = m.mode
  process.send?.({ ack: m.index })
})
process.on('disconnect', () => { process.exit(0) })
