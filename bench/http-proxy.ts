// The baseline proxy: http-proxy with a keep-alive agent and nothing else. Runs as its own process.
import http from 'node:http'
import httpProxy from 'http-proxy'

const target = `http://127.0.0.1:${String(process.env.BENCH_APP_PORT)}`
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 })
const proxy = httpProxy.createProxyServer({ target, agent })
proxy.on('error', (_err, _req, res) => {
  const r = res as http.ServerResponse
  if (!r.headersSent) r.writeHead(502)
  r.end()
})
const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => { proxy.web(req, res) })
server.listen(0, '127.0.0.1', () => {
  process.send?.({ port: (server.address() as { port: number }).port })
})
process.on('disconnect', () => { process.exit(0) })
