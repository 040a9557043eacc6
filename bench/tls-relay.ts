// The mTLS section's floor: what Node's TLS layer costs per request with no proxy in the way. Two byte relays in a row
// in one process, like the nginx pair: a consumer's side (plaintext in, out to the provider's side) and a provider's
// side (in, out to the app), each with a connection of its own per client connection and bytes piped both ways, no
// HTTP at all. Between the two sides plaintext, or mutual TLS with the certificates the section makes (the client's
// verified against the CA, the server's name checked). The relays' mTLS minus their plaintext is what TLS alone adds to
// a request's reads and writes on this runtime and machine: a floor under what mTLS can add to doorman.
// Env: BENCH_APP_PORT, and BENCH_TLS (JSON: provider and consumer cert/key PEM paths, the CA's and the server name).
// Reports its four ports over IPC: { front: { plain, tls }, back: { plain, tls } }.
import net from 'node:net'
import tls from 'node:tls'
import { readFileSync } from 'node:fs'

interface Files { provider: { crt: string, key: string }, consumer: { crt: string, key: string }, ca: string, servername: string }
const files = JSON.parse(process.env.BENCH_TLS ?? '{}') as Files
const appPort = Number(process.env.BENCH_APP_PORT)
const ca = readFileSync(files.ca)
const consumer = { cert: readFileSync(files.consumer.crt), key: readFileSync(files.consumer.key) }

/** Pipes `a` and `b` both ways; either one's end or error ends both. */
function splice (a: net.Socket, b: net.Socket): void {
  a.pipe(b)
  b.pipe(a)
  a.on('error', () => { b.destroy() })
  b.on('error', () => { a.destroy() })
  a.on('close', () => { b.destroy() })
  b.on('close', () => { a.destroy() })
}

const toApp = (client: net.Socket): void => { splice(client, net.connect({ port: appPort, host: '127.0.0.1', noDelay: true })) }

async function listen (server: net.Server): Promise<number> {
  return await new Promise((resolve) => { server.listen(0, '127.0.0.1', () => { resolve((server.address() as net.AddressInfo).port) }) })
}

const backPlain = net.createServer({ noDelay: true }, toApp)
const backTls = tls.createServer({
  cert: readFileSync(files.provider.crt),
  key: readFileSync(files.provider.key),
  ca,
  requestCert: true,
  rejectUnauthorized: true,
  minVersion: 'TLSv1.2',
  noDelay: true
}, toApp)
const ports = { back: { plain: await listen(backPlain), tls: await listen(backTls) }, front: { plain: 0, tls: 0 } }
const frontPlain = net.createServer({ noDelay: true }, (client) => {
  splice(client, net.connect({ port: ports.back.plain, host: '127.0.0.1', noDelay: true }))
})
const frontTls = net.createServer({ noDelay: true }, (client) => {
  const up = tls.connect({ port: ports.back.tls, host: '127.0.0.1', servername: files.servername, ca, ...consumer })
  up.setNoDelay(true)
  splice(client, up)
})
ports.front = { plain: await listen(frontPlain), tls: await listen(frontTls) }
process.send?.(ports)
process.on('disconnect', () => { process.exit(0) })
