// A request body kept so that a second attempt can send it again (the outbound lane's retries): each attempt gets a
// fresh stream holding the bytes read so far, then the rest as it comes. Once more than `max` bytes passed, or the
// attempt whose answer is passed on committed, the bytes are no longer kept.
import { PassThrough, type Readable } from 'node:stream'

export class ReplayBody {
  #src: Readable
  #max: number
  #chunks: Buffer[] | null = []
  #size = 0
  #ended = false
  #out: PassThrough

  constructor (src: Readable, max: number) {
    this.#src = src
    this.#max = max
    this.#out = new PassThrough()
    src.on('data', this.#onData)
    src.once('end', this.#onEnd)
    src.once('error', this.#onError)
  }

  /** The stream for the first attempt. */
  get body (): PassThrough { return this.#out }
  get replayable (): boolean { return this.#chunks !== null }

  #onData = (c: Buffer): void => {
    if (this.#chunks !== null) {
      this.#size += c.length
      if (this.#size > this.#max) this.#chunks = null
      else this.#chunks.push(c)
    }
    if (!this.#out.write(c)) {
      this.#src.pause()
      this.#out.once('drain', this.#resume)
    }
  }

  #resume = (): void => { this.#src.resume() }
  #onEnd = (): void => { this.#ended = true; this.#out.end() }
  /** The client's upload broke: the attempt's body breaks too (its request fails rather than sending a short body). */
  #onError = (err: Error): void => { this.#chunks = null; this.#out.destroy(err) }

  /** A fresh body for another attempt (null when the bytes are no longer kept). */
  again (): PassThrough | null {
    if (this.#chunks === null) return null
    const old = this.#out
    old.removeListener('drain', this.#resume)
    old.destroy()
    const p = new PassThrough()
    for (const c of this.#chunks) p.write(c)
    if (this.#ended) p.end()
    this.#out = p
    this.#src.resume()
    return p
  }

  /** The attempt whose answer is passed on: nothing more to keep. */
  commit (): void { this.#chunks = null }

  /** Stops reading the client's request (the exchange is over): what more it sends is dropped. */
  stop (): void {
    this.#src.removeListener('data', this.#onData)
    this.#src.resume()
    this.#out.removeListener('drain', this.#resume)
    if (!this.#out.writableEnded) this.#out.destroy()
  }
}
