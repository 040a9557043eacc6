// A small HTTP/2 frame writer and reader for tests that must control the wire exactly (RFC 9113 §4, §6): what a
// careless or hostile peer sends (a FIN with streams open, a preface alone, HEADERS without END_HEADERS, a window
// of zero, headers before the SETTINGS ACK), which an HTTP/2 library would hide or refuse to send. Header blocks are
// HPACK literals without indexing and without Huffman coding (RFC 7541 §6.2.2), the simplest valid encoding; what the
// peer answers is read as frames, bodies as DATA payloads (HPACK in answers is not decoded).
import net from 'node:net'

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

export const DATA = 0
export const HEADERS = 1
export const RST_STREAM = 3
export const SETTINGS = 4
export const PING = 6
export const GOAWAY = 7
export const WINDOW_UPDATE = 8
export const CONTINUATION = 9

export const END_STREAM = 0x1
export const ACK = 0x1
export const END_HEADERS = 0x4

/** SETTINGS identifiers (RFC 9113 §6.5.2). */
export const SETTINGS_INITIAL_WINDOW_SIZE = 0x4

export function frame (type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9)
  h.writeUIntBE(payload.length, 0, 3)
  h[3] = type
  h[4] = flags
  h.writeUInt32BE(stream & 0x7fffffff, 5)
  return Buffer.concat([h, payload])
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1); the prefix's high bits are 0. */
function hpackInt (value: number, prefix: number): number[] {
  const max = (1 << prefix) - 1
  if (value < max) return [value]
  const out = [max]
  value -= max
  while (value >= 128) { out.push((value % 128) + 128); value = Math.floor(value / 128) }
  out.push(value)
  return out
}

function hpackString (s: string): Buffer {
  const b = Buffer.from(s, 'latin1')
  return Buffer.concat([Buffer.from(hpackInt(b.length, 7)), b])
}

/** A header block: every field a literal without indexing, new name, no Huffman. */
export function headerBlock (fields: Array<[string, string]>): Buffer {
  const parts: Buffer[] = []
  for (const [name, value] of fields) parts.push(Buffer.from([0]), hpackString(name), hpackString(value))
  return Buffer.concat(parts)
}

export function settings (pairs: Array<[number, number]> = []): Buffer {
  const p = Buffer.alloc(6 * pairs.length)
  pairs.forEach(([id, v], i) => { p.writeUInt16BE(id, i * 6); p.writeUInt32BE(v, i * 6 + 2) })
  return frame(SETTINGS, 0, 0, p)
}

/** The largest frame payload a peer must accept before SETTINGS say otherwise (RFC 9113 §4.2). */
const MAX_FRAME = 16_384

/**
 * A request's header block: a HEADERS frame, and CONTINUATION frames when the block is over the frame size; the last
 * one carries END_HEADERS unless `endHeaders` is false (then the block is never finished).
 */
export function request (stream: number, fields: Array<[string, string]>, opts: { endStream?: boolean, endHeaders?: boolean } = {}): Buffer {
  const block = headerBlock(fields)
  const frames: Buffer[] = []
  for (let off = 0; off === 0 || off < block.length; off += MAX_FRAME) {
    const last = off + MAX_FRAME >= block.length
    const flags = (off === 0 && opts.endStream === true ? END_STREAM : 0) | (last && opts.endHeaders !== false ? END_HEADERS : 0)
    frames.push(frame(off === 0 ? HEADERS : CONTINUATION, flags, stream, block.subarray(off, off + MAX_FRAME)))
  }
  return Buffer.concat(frames)
}

export function get (stream: number, path: string, authority = 'app', extra: Array<[string, string]> = [], opts: { endStream?: boolean } = {}): Buffer {
  return request(stream, [[':method', 'GET'], [':scheme', 'http'], [':path', path], [':authority', authority], ...extra], { endStream: opts.endStream ?? true })
}

export function data (stream: number, body: Buffer | string, endStream = false): Buffer {
  return frame(DATA, endStream ? END_STREAM : 0, stream, Buffer.isBuffer(body) ? body : Buffer.from(body))
}

export interface Frame { type: number, flags: number, stream: number, payload: Buffer }

/** A raw HTTP/2 client connection: frames in, frames out, and the socket's state. */
export class Wire {
  readonly socket: net.Socket
  readonly frames: Frame[] = []
  closed = false
  ended = false
  #buf = Buffer.alloc(0)
  #acks = true

  private constructor (socket: net.Socket, opts: { ackSettings: boolean }) {
    this.socket = socket
    this.#acks = opts.ackSettings
    socket.on('data', (c: Buffer) => { this.#read(c) })
    socket.on('end', () => { this.ended = true })
    socket.on('close', () => { this.closed = true })
    socket.on('error', () => {})
  }

  /**
   * Connects and sends the preface and an empty SETTINGS (unless `preface` is false). `ackSettings: false` never ACKs
   * the server's SETTINGS, so the server's own settings are never in force.
   */
  static async open (port: number, opts: { preface?: boolean, ackSettings?: boolean, settings?: Array<[number, number]>, host?: string } = {}): Promise<Wire> {
    const socket = net.connect(port, opts.host ?? '127.0.0.1')
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    const w = new Wire(socket, { ackSettings: opts.ackSettings !== false })
    if (opts.preface !== false) w.send(Buffer.concat([PREFACE, settings(opts.settings ?? [])]))
    return w
  }

  send (...bufs: Buffer[]): void {
    if (!this.socket.destroyed) this.socket.write(Buffer.concat(bufs))
  }

  /** Closes the write side (TCP FIN) without GOAWAY or RST_STREAM, the socket still readable. */
  fin (): void { this.socket.end() }

  destroy (): void { this.socket.destroy() }

  #read (chunk: Buffer): void {
    this.#buf = Buffer.concat([this.#buf, chunk])
    while (this.#buf.length >= 9) {
      const len = this.#buf.readUIntBE(0, 3)
      if (this.#buf.length < 9 + len) break
      const f: Frame = { type: this.#buf[3], flags: this.#buf[4], stream: this.#buf.readUInt32BE(5) & 0x7fffffff, payload: this.#buf.subarray(9, 9 + len) }
      this.#buf = this.#buf.subarray(9 + len)
      this.frames.push(f)
      if (f.type === SETTINGS && (f.flags & ACK) === 0 && this.#acks) this.send(frame(SETTINGS, ACK, 0))
      if (f.type === PING && (f.flags & ACK) === 0) this.send(frame(PING, ACK, 0, f.payload))
    }
  }

  /** Frames of a type (on a stream, when given). */
  of (type: number, stream?: number): Frame[] {
    return this.frames.filter((f) => f.type === type && (stream === undefined || f.stream === stream))
  }

  /** The DATA received on a stream, as text. */
  body (stream: number): string {
    return Buffer.concat(this.of(DATA, stream).map((f) => f.payload)).toString()
  }

  /** Whether the stream was ended by the server (END_STREAM on HEADERS or DATA, or RST_STREAM). */
  streamEnded (stream: number): boolean {
    return this.frames.some((f) => f.stream === stream && (f.type === RST_STREAM || ((f.type === DATA || f.type === HEADERS) && (f.flags & END_STREAM) !== 0)))
  }
}
