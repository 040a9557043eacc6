// The floor for any proxy in Node on this machine: a byte relay with no HTTP at all. Each client connection gets a
// connection of its own to the app and bytes are piped both ways, so a request costs two reads and two writes and
// nothing else. Runs as its own process, reports its port over IPC.
import net from 'node:net'

const port = Number(process.env.BENCH_APP_PORT)
const server = net.createServer({ noDelay: true }, (client) => {
  const app = net.connect({ port, host: '127.0.0.1', noDelay: true })
  client.pipe(app)
  app.pipe(client)
  client.on('error', () => { app.destroy() })
  app.on('error', () => { client.destroy() })
  client.on('close', () => { app.destroy() })
  app.on('close', () => { client.destroy() })
})
server.listen(0, '127.0.0.1', () => {
  process.send?.({ port: (server.address() as net.AddressInfo).port })
})
process.on('disconnect', () => { process.exit(0) })
