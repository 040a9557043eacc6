// The gRPC section's app: a node:http2 server (h2c, prior knowledge) answering unary gRPC calls, as grpc-js does on
// the wire: HTTP 200, `content-type: application/grpc`, one length-prefixed message, then `grpc-status: 0` in the
// trailers. `/bench.Bench/Fast` answers at once, `/bench.Bench/Slow` after BENCH_SLOW_MS (20). Runs as its own process
// (forked by the runner), reports its port over IPC.
import http2 from 'node:http2'

const slowMs = Number(process.env.BENCH_SLOW_MS ?? 20)
// A small protobuf message: field 1 (string) "bench-app ok", field 2 (varint) 42.
const MESSAGE = Buffer.concat([Buffer.from([0x0a, 12]), Buffer.from('bench-app ok'), Buffer.from([0x10, 42])])
const FRAME = Buffer.concat([Buffer.from([0, 0, 0, 0, MESSAGE.length]), MESSAGE])

function reply (stream: http2.ServerHttp2Stream): void {
  if (stream.destroyed || stream.closed) return
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
  stream.once('wantTrailers', () => { stream.sendTrailers({ 'grpc-status': '0' }) })
  stream.end(FRAME)
}

const server = http2.createServer({ settings: { maxConcurrentStreams: 4096 } })
server.on('stream', (stream: http2.ServerHttp2Stream, headers) => {
  stream.on('error', () => {})
  // Read the request to its end (the call's message), then answer.
  stream.resume()
  stream.once('end', () => {
    if (headers[':path'] === '/bench.Bench/Slow') setTimeout(reply, slowMs, stream)
    else reply(stream)
  })
})
server.listen(0, '127.0.0.1', () => {
  process.send?.({ port: (server.address() as { port: number }).port })
})
process.on('disconnect', () => { process.exit(0) })
