// The demo's gRPC provider: a grpc-js server (cleartext HTTP/2) with one unary method, `demo.Evaluate/Call`, that
// answers after a few milliseconds with its instance name. Messages are JSON rather than protobuf so that the demo
// needs no .proto file next to dist/: what doorman carries (HTTP/2 framing, gRPC length-prefixed messages, trailers)
// is the same. Prints {"port":N} once listening; SIGTERM stops it.
import { parseArgs } from 'node:util'
import { EVALUATE, type Grpc } from './grpc-service.js'

const { values } = parseArgs({ options: { name: { type: 'string' }, port: { type: 'string' }, 'delay-ms': { type: 'string', default: '5' } } })
const name = values.name ?? 'grpc-app'
const delayMs = Number(values['delay-ms'])

const grpc = await import('@grpc/grpc-js') as unknown as Grpc
const server = new grpc.Server()
server.addService(EVALUATE, {
  Call (call: { request: { id?: number } }, cb: (err: null, res: { id?: number, instance: string }) => void) {
    setTimeout(() => { cb(null, { id: call.request.id, instance: name }) }, delayMs)
  }
})
server.bindAsync(`127.0.0.1:${values.port ?? '0'}`, grpc.ServerCredentials.createInsecure(), (err: Error | null, port: number) => {
  if (err !== null) { process.stderr.write(`${err.message}\n`); process.exitCode = 1; return }
  process.stdout.write(JSON.stringify({ port }) + '\n')
})
process.on('SIGTERM', () => { server.forceShutdown(); process.exitCode = 0; setImmediate(() => { process.kill(process.pid, 'SIGKILL') }) })
