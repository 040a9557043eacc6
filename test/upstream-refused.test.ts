// A connection given back from inside undici's own error handling (a refused connect fails every request queued on
// it, one after another) must not be handed to the next waiting request right there: undici asserts its queue's
// state while it unwinds, and a re-dispatch in the middle threw out of the process. Three requests on one connection
// to a port nothing listens on: each fails cleanly as refused, and the process lives.
import t from 'tap'
import net from 'node:net'
import { Upstream, type UpstreamHandler } from '../src/proxy/upstream-h1.js'

t.test('requests queued on one connection to a refused port all fail as refused; nothing throws', async (t) => {
  const s = net.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as net.AddressInfo).port
  await new Promise((resolve) => s.close(resolve))
  const up = new Upstream(`http://127.0.0.1:${port}`, 1, { connect: { timeout: 2000 } })
  t.teardown(async () => { await up.close() })
  const uncaught: Error[] = []
  const onUncaught = (err: Error): void => { uncaught.push(err) }
  process.on('uncaughtException', onUncaught)
  t.teardown(() => { process.off('uncaughtException', onUncaught) })
  const codes = await Promise.all([1, 2, 3].map(async (i) => await new Promise<string>((resolve) => {
    const h: UpstreamHandler = {
      conn: null,
      onRequestStart: () => {},
      onResponseStart: () => {},
      onResponseData: () => {},
      onResponseEnd: (_c) => { if (h.conn !== null) up.free(h.conn); resolve('ended') },
      onResponseError: (_c, err) => { if (h.conn !== null) up.free(h.conn); resolve((err as { code?: string }).code ?? String(err)) }
    }
    up.dispatch({ path: `/${i}`, method: 'GET', headers: ['host', 'app'] }, h)
  })))
  t.same(codes, ['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED'], 'each refused')
  t.same(uncaught, [], 'nothing thrown out of undici')
})
