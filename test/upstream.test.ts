import t from 'tap'
import type { Socket } from 'node:net'
import { Upstream, type Conn, type UpstreamHandler } from '../src/proxy/upstream-h1.js'
import { startServer } from './helpers/index.js'

/** An undici handler that frees its connection when undici ends the request, as the inbound's Exchange does. */
class Collect implements UpstreamHandler {
  conn: Conn | null = null
  status = 0
  body = ''
  error: Error | null = null
  readonly done: Promise<void>
  #resolve!: () => void
  constructor (readonly upstream: Upstream) { this.done = new Promise((resolve) => { this.#resolve = resolve }) }
  onRequestStart (): void {}
  onResponseStart (_c: unknown, status: number): void { this.status = status }
  onResponseData (_c: unknown, chunk: Buffer): void { this.body += chunk.toString() }
  onResponseEnd (): void { this.#end() }
  onResponseError (_c: unknown, err: Error): void { this.error = err; this.#end() }
  #end (): void {
    const c = this.conn
    this.conn = null
    if (c !== null) this.upstream.free(c)
    this.#resolve()
  }
}

async function send (u: Upstream, path: string, headers: string[] = []): Promise<Collect> {
  const h = new Collect(u)
  u.dispatch({ path, method: 'GET', headers }, h)
  await h.done
  return h
}

t.test('one keep-alive connection serves requests one after another', async (t) => {
  const sockets = new Set<Socket>()
  const { port } = await startServer(t, (req, res) => { sockets.add(req.socket); res.end(req.url) })
  const u = new Upstream(`http://127.0.0.1:${port}`, 4)
  t.teardown(async () => { await u.close() })
  for (let i = 0; i < 20; i++) {
    const h = await send(u, `/r${i}`)
    t.equal(h.status, 200)
    t.equal(h.body, `/r${i}`)
  }
  t.equal(sockets.size, 1, 'the app saw one connection')
  t.equal(u.size, 1)
})

t.test('never more connections than the maximum; extra requests wait their turn, in order', async (t) => {
  let open = 0
  let most = 0
  const arrivals: string[] = []
  const { port } = await startServer(t, (req, res) => {
    arrivals.push(req.url as string)
    open++
    most = Math.max(most, open)
    setTimeout(() => { open--; res.end(req.url) }, 30)
  })
  const u = new Upstream(`http://127.0.0.1:${port}`, 3)
  t.teardown(async () => { await u.close() })
  const all = await Promise.all(Array.from({ length: 12 }, async (_, i) => await send(u, `/q${i}`)))
  t.same(all.map((h) => h.body), Array.from({ length: 12 }, (_, i) => `/q${i}`), 'every request answered')
  t.ok(most <= 3, `at most 3 requests at the app at once (saw ${most})`)
  t.equal(u.size, 3)
  t.same(arrivals.slice(3), Array.from({ length: 9 }, (_, i) => `/q${i + 3}`), 'the waiting requests went in arrival order')
})

t.test('a request undici refuses frees its connection', async (t) => {
  const { port } = await startServer(t, (req, res) => { res.end('ok') })
  const u = new Upstream(`http://127.0.0.1:${port}`, 1)
  t.teardown(async () => { await u.close() })
  const bad = await send(u, '/', ['x-bad', 'a\nb'])
  t.ok(bad.error !== null, 'the invalid header value is refused')
  const good = await send(u, '/')
  t.equal(good.status, 200, 'the only connection is free again')
  t.equal(good.body, 'ok')
})

t.test('a failed connection is given back and the next request connects again', async (t) => {
  let up = false
  const { port } = await startServer(t, (req, res) => {
    if (!up) { up = true; req.socket.destroy(); return }
    res.end('second')
  })
  const u = new Upstream(`http://127.0.0.1:${port}`, 1)
  t.teardown(async () => { await u.close() })
  const first = await send(u, '/')
  t.ok(first.error !== null, 'the reset reaches onResponseError')
  const second = await send(u, '/')
  t.equal(second.body, 'second')
})

t.test('close() lets the requests in flight finish', async (t) => {
  const { port } = await startServer(t, (req, res) => { setTimeout(() => { res.end('late') }, 100) })
  const u = new Upstream(`http://127.0.0.1:${port}`, 2)
  const h = new Collect(u)
  u.dispatch({ path: '/', method: 'GET', headers: [] }, h)
  let closed = false
  const closing = u.close().then(() => { closed = true })
  await h.done
  t.equal(h.body, 'late', 'the request in flight completed')
  await closing
  t.ok(closed)
})
