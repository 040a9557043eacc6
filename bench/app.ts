// The benchmark's app: a plain http.Server with a fast route and a 20 ms route. Runs as its own process (forked by
// the runner), reports its port over IPC.
import http from 'node:http'

const BODY = Buffer.from('{"ok":true,"service":"bench-app","items":[1,2,3,4,5,6,7,8]}\n')
const slowMs = Number(process.env.BENCH_SLOW_MS ?? 20)

function reply (res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length })
  res.end(BODY)
}

const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  if (req.url === '/slow') setTimeout(reply, slowMs, res)
  else reply(res)
})
server.listen(0, '127.0.0.1', () => {
  process.send?.({ port: (server.address() as { port: number }).port })
})
process.on('disconnect', () => { process.exit(0) })
