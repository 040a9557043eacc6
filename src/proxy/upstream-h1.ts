// The app's keep-alive connections: one undici client per connection (`UndiciClient`, named so to keep it apart from
// the core's `Client`, the downstream side of an exchange), one request at a time on each, the most recently freed
// handed out first. undici's Pool finds a free client by scanning all of them on every request (twice when the first
// pick is busy), a cost that grows with the requests in flight; here a request takes the top of a stack of free
// connections and gives it back when its exchange ends.
import type { Dispatcher } from 'undici'
import { Client as UndiciClient } from '../core/undici.js'

/** One connection to the app. */
export class Conn {
  idle = false
  constructor (readonly undici: UndiciClient) {}
}

/** A request's handler, told which connection carries it. */
export interface UpstreamHandler extends Dispatcher.DispatchHandler {
  conn: Conn | null
}

export class Upstream {
  readonly #origin: string
  readonly #options: UndiciClient.Options
  readonly #max: number
  readonly #free: Conn[] = []
  readonly #all: Conn[] = []
  /** Requests waiting for a connection when all `max` are busy (FIFO). */
  readonly #waiting: Array<{ opts: Dispatcher.DispatchOptions, handler: UpstreamHandler }> = []
  #emptied: (() => void) | null = null

  /** At most `max` connections to `origin`; `options` are undici Client options (pipelining is always 1). */
  constructor (origin: string, max: number, options: UndiciClient.Options = {}) {
    this.#origin = origin
    this.#max = Math.max(1, max)
    this.#options = { ...options, pipelining: 1 }
  }

  /** Connections open or opening. */
  get size (): number { return this.#all.length }

  /**
   * Sends a request on a free connection (opening one while fewer than `max` exist), or queues it until one is
   * given back. The connection is set on `handler.conn` before the request starts; the handler must free() it once
   * undici has ended the request (its onResponseEnd or onResponseError, exactly one of which runs).
   */
  dispatch (opts: Dispatcher.DispatchOptions, handler: UpstreamHandler): void {
    let conn = this.#free.pop()
    if (conn === undefined) {
      if (this.#all.length >= this.#max) { this.#waiting.push({ opts, handler }); return }
      conn = new Conn(new UndiciClient(this.#origin, this.#options))
      this.#all.push(conn)
    }
    conn.idle = false
    handler.conn = conn
    conn.undici.dispatch(opts, handler)
  }

  /** Gives a connection back (idempotent): to the oldest waiting request, else to the free stack. */
  free (conn: Conn): void {
    if (conn.idle) return
    const next = this.#waiting.shift()
    if (next !== undefined) {
      next.handler.conn = conn
      // Handed over once the current call stack has unwound: free() runs inside undici's callbacks, and when undici
      // is failing the requests of a connection that broke (a refused connect fails each in turn) a dispatch in the
      // middle breaks its queue's invariants (an assertion thrown out of the process). undici reports a request it
      // refuses through onResponseError, which frees the connection again.
      queueMicrotask(() => { conn.undici.dispatch(next.opts, next.handler) })
      return
    }
    conn.idle = true
    this.#free.push(conn)
    if (this.#emptied !== null && this.#free.length === this.#all.length) this.#emptied()
  }

  /** Waits for the requests in flight and queued, then closes every connection. */
  async close (): Promise<void> {
    if (this.#free.length < this.#all.length) {
      await new Promise<void>((resolve) => { this.#emptied = resolve })
    }
    await Promise.all(this.#all.map(async (c) => { await c.undici.close() }))
  }
}
