// gRPC on the wire without a gRPC library: a unary call as a plain HTTP/2 request (a client that sends grpc-timeout
// but never enforces it itself), and the echo fixture's message in protobuf wire form.
import http2 from 'node:http2'

type Any = Record<string, any>

/** One unary call to /doorman.test.Echo/Unary; resolves with the response head and trailers merged, and how long it took. */
export async function rawGrpc (port: number, msg: Uint8Array, headers: Record<string, string>): Promise<{ headers: Any, ms: number, session: http2.ClientHttp2Session }> {
  const session = http2.connect(`http://127.0.0.1:${port}`)
  const t0 = Date.now()
  return await new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': '/doorman.test.Echo/Unary', 'content-type': 'application/grpc', te: 'trailers', ...headers })
    let head: Any = null
    req.on('response', (h) => { head = h })
    req.on('trailers', (h) => { head = { ...head, ...h } })
    req.on('data', () => {})
    req.on('end', () => { resolve({ headers: head, ms: Date.now() - t0, session }) })
    req.on('error', reject)
    const frame = Buffer.alloc(5 + msg.length)
    frame.writeUInt32BE(msg.length, 1)
    Buffer.from(msg).copy(frame, 5)
    req.end(frame)
  })
}

/** Msg { text, delay_ms } in protobuf wire form (fields 1 and 3). */
export function encodeMsg (text: string, delayMs: number): Uint8Array {
  const tb = Buffer.from(text)
  return Buffer.concat([Buffer.from([0x0a, tb.length]), tb, Buffer.from([0x18]), varint(delayMs)])
}

function varint (n: number): Buffer {
  const out: number[] = []
  while (n > 127) { out.push((n & 127) | 128); n >>>= 7 }
  out.push(n)
  return Buffer.from(out)
}
