// The gRPC section's floor: the least a proxy on node:http2 does per call — one h2c client session to the app, each
// inbound stream relayed as one upstream stream (headers, body, response, trailers), no policy, no metrics.
import http2 from 'node:http2'

const appPort = Number(process.env.BENCH_APP_PORT)
let upstream: http2.ClientHttp2Session | null = null
function session (): http2.ClientHttp2Session {
  if (upstream === null || upstream.destroyed || upstream.closed) {
    upstream = http2.connect(`http://127.0.0.1:${appPort}`)
    upstream.on('error', () => {})
  }
  return upstream
}

const server = http2.createServer({ settings: { maxConcurrentStreams: 4096 } })
server.on('stream', (stream: http2.ServerHttp2Stream, headers) => {
  stream.on('error', () => {})
  const out: http2.OutgoingHttpHeaders = {}
  for (const [k, v] of Object.entries(headers)) if (k !== ':scheme' && k !== ':authority' && k !== 'connection') out[k] = v
  const up = session().request(out, { waitForTrailers: false })
  up.on('error', () => { if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR) })
  stream.on('close', () => { if (!up.closed) up.close(http2.constants.NGHTTP2_CANCEL) })
  up.on('response', (h) => {
    if (stream.destroyed || stream.closed) return
    const rh: http2.OutgoingHttpHeaders = {}
    for (const [k, v] of Object.entries(h)) rh[k] = v
    let trailers: http2.IncomingHttpHeaders | null = null
    up.once('trailers', (t) => { trailers = t })
    stream.respond(rh, { waitForTrailers: true })
    stream.once('wantTrailers', () => { stream.sendTrailers(trailers ?? {}) })
    up.pipe(stream)
  })
  stream.pipe(up)
})
server.listen(0, '127.0.0.1', () => {
  process.send?.({ port: (server.address() as { port: number }).port })
})
process.on('disconnect', () => { process.exit(0) })
