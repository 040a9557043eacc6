// The proxy core's lifecycle (src/proxy/exchange.ts) driven alone, with fakes for what a lane gives it: a client
// side that records what it was told, a route whose attempts the test answers through undici's handler callbacks
// and a controller of its own, and a policy that admits, queues or sheds as each test says. No socket, no process:
// admission, shed, retry, backpressure, trailers, deadline, client gone and peer reset, each in a few milliseconds.
// Timers are real and short (a gRPC deadline of a few ms, a write timeout of 20 ms) and waited for by polling.
import t from 'tap'
import { PassThrough, type Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { Exchange, type Client, type OwnAnswer, type Outcome, type Policy, type Route } from '../src/proxy/exchange.js'
import type { ForwardInfo } from '../src/proxy/headers.js'
import { Waiter, type ShedReason } from '../src/limiter/index.js'
import { DoormanError } from '../src/core/errors.js'
import { GRPC_DEADLINE_EXCEEDED, GRPC_UNAVAILABLE } from '../src/core/grpc.js'
import { waitFor } from './helpers/index.js'

/** The client side, as a lane's adapter would be: it records the calls the Exchange makes. */
class FakeClient implements Client {
  h2: boolean
  grpc: boolean
  method: string
  path = '/work'
  grpcTimeout: string | undefined
  gone = false
  headSent = false
  calls: string[] = []
  answers: OwnAnswer[] = []
  heads: Array<{ status: number, headers: string[] }> = []
  chunks: Buffer[] = []
  trailers: Array<Buffer | string> | null | undefined = undefined
  failedAfterHead: Array<{ grpcStatus: number, message: string }> = []
  /** What write() returns: false says the client's buffer is full. */
  accepts = true
  #close: Array<() => void> = []
  #drain: Array<() => void> = []
  #raw: string[]
  #body: Readable | null

  constructor (opts: { method?: string, grpc?: boolean, grpcTimeout?: string, headers?: string[], body?: Readable } = {}) {
    this.method = opts.method ?? 'GET'
    this.grpc = opts.grpc ?? false
    this.h2 = this.grpc
    this.grpcTimeout = opts.grpcTimeout
    this.#raw = ['host', 'app.local', ...(opts.headers ?? [])]
    this.#body = opts.body ?? null
  }

  rawHeaders = (): string[] => this.#raw.slice()
  forwardInfo = (trusted: boolean): ForwardInfo => ({ remoteAddress: '127.0.0.1', proto: 'http', port: 7080, trusted })
  hasBody = (framed: boolean): boolean => this.#body !== null && framed
  body = (): Readable => this.#body as Readable
  onClose = (fn: () => void): void => { this.#close.push(fn) }
  proceed = (): void => { this.calls.push('proceed') }
  head = (status: number, _text: string, headers: string[]): void => { this.calls.push('head'); this.heads.push({ status, headers }) }
  write = (chunk: Buffer): boolean => {
    this.calls.push('write')
    this.headSent = true
    this.chunks.push(chunk)
    return this.accepts
  }

  onceDrain = (fn: () => void): void => { this.#drain.push(fn) }
  end = (trailers: Array<Buffer | string> | null): void => { this.calls.push('end'); this.headSent = true; this.trailers = trailers }
  answer = (a: OwnAnswer): void => { this.calls.push('answer'); this.answers.push(a) }
  failAfterHead = (grpcStatus: number, message: string): void => { this.calls.push('failAfterHead'); this.failedAfterHead.push({ grpcStatus, message }) }
  reset = (): void => { this.calls.push('reset'); this.gone = true }

  /** The client goes away (a closed connection, an RST_STREAM from the caller). */
  leave (): void { this.gone = true; for (const fn of this.#close.splice(0)) fn() }
  /** The client took what was written. */
  drained (): void { this.accepts = true; for (const fn of this.#drain.splice(0)) fn() }
}

/** undici's controller for one attempt, as the routes hand it to the Exchange. */
class FakeController implements Dispatcher.DispatchController {
  paused = false
  aborted = false
  reason: Error | null = null
  rawHeaders: Buffer[] = []
  rawTrailers: Buffer[] | null = null
  stream: { rstCode?: number, closed: boolean, destroyed: boolean, close: (code: number) => void } | null = null
  pause (): void { this.paused = true }
  resume (): void { this.paused = false }
  abort (reason: Error): void { this.aborted = true; this.reason = reason }
}

/** One attempt the route took: what was sent, and the handler to answer it through. */
interface Attempt {
  opts: Dispatcher.DispatchOptions
  handler: Dispatcher.DispatchHandler
  ctl: FakeController
}

class FakeRoute implements Route {
  attempts: Attempt[] = []
  constructor (readonly name: string) {}
  dispatch = (opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean => {
    const ctl = new FakeController()
    this.attempts.push({ opts, handler, ctl })
    handler.onRequestStart?.(ctl, {})
    return true
  }
}

const raw = (...pairs: string[]): Buffer[] => pairs.map((s) => Buffer.from(s))

/** The peer's answer to an attempt: a head, body chunks, then the end with trailers. */
function respond (a: Attempt, status: number, headers: string[], body: string[] = [], trailers: string[] | null = null): void {
  a.ctl.rawHeaders = raw(...headers)
  a.handler.onResponseStart?.(a.ctl, status, {}, 'OK')
  for (const b of body) a.handler.onResponseData?.(a.ctl, Buffer.from(b))
  a.ctl.rawTrailers = trailers === null ? null : raw(...trailers)
  a.handler.onResponseEnd?.(a.ctl, {})
}

/** The lane's policy: admission as the test says, routes in turn, every hook recorded. */
class FakePolicy implements Policy {
  trusted = false
  stripOwn = true
  writeTimeout = 20
  maxRetryBody = 64 * 1024
  routes: Array<Route | null>
  admission: true | ShedReason | 'queue' = true
  waiter: Waiter | null = null
  cancelled: Waiter[] = []
  routeAsked: boolean[] = []
  retries: string[] = []
  ended: Array<boolean | undefined> = []
  outcomes: Outcome[] = []
  /** What inspect() answers for each status. */
  verdict: (status: number) => 'pass' | 'retry' = () => 'pass'
  canRetryAnswer = true

  constructor (...routes: Array<Route | null>) { this.routes = routes }
  extra = (): readonly string[] | null => null
  admit = (ex: Exchange): true | ShedReason | Waiter => {
    if (this.admission !== 'queue') return this.admission
    this.waiter = new Waiter(0 as never, Infinity, ex.onGrant)
    return this.waiter
  }

  cancel = (w: Waiter): void => { this.cancelled.push(w) }
  route = (_ex: Exchange, retry: boolean): Route | null => { this.routeAsked.push(retry); return this.routes.shift() ?? null }
  noRoute = (): DoormanError => new DoormanError('DOORMAN_ERR_NO_INSTANCE', 'no instance', 503)
  canRetry = (): boolean => this.canRetryAnswer
  inspect = (_ex: Exchange, status: number): 'pass' | 'retry' => this.verdict(status)
  attemptEnded = (_ex: Exchange, failed: boolean | undefined): void => { this.ended.push(failed) }
  retrying = (_ex: Exchange, reason: string): void => { this.retries.push(reason) }
  settle = (_ex: Exchange, o: Outcome): void => { this.outcomes.push(o) }

  /** The one outcome (a second settle is a bug the tests catch). */
  get outcome (): Outcome {
    if (this.outcomes.length !== 1) throw new Error(`settled ${this.outcomes.length} times`)
    return this.outcomes[0]
  }
}

const header = (headers: string[], name: string): string | undefined => {
  for (let i = 0; i < headers.length; i += 2) if (headers[i].toLowerCase() === name) return headers[i + 1]
  return undefined
}

function exchange (client: FakeClient, policy: FakePolicy): Exchange {
  const ex = new Exchange(client, policy, performance.now())
  ex.start()
  return ex
}

t.test('admitted: headers rewritten once, the response relayed, settled ok once', async (t) => {
  const route = new FakeRoute('app')
  const policy = new FakePolicy(route)
  const client = new FakeClient({ headers: ['x-request-id', 'abc', 'x-doorman-shed', 'forged'] })
  exchange(client, policy)
  t.equal(route.attempts.length, 1, 'one attempt')
  const sent = route.attempts[0].opts
  t.equal(sent.method, 'GET')
  t.equal(sent.path, '/work')
  const h = sent.headers as string[]
  t.equal(header(h, 'x-request-id'), 'abc', 'the request id is kept')
  t.equal(header(h, 'x-doorman-shed'), undefined, "a client's x-doorman-* is dropped")
  t.equal(header(h, 'x-forwarded-for'), '127.0.0.1', 'x-forwarded-for added')
  respond(route.attempts[0], 200, ['content-type', 'text/plain', 'content-length', '5'], ['hel', 'lo'])
  t.same(client.calls, ['proceed', 'head', 'write', 'write', 'end'])
  t.equal(client.heads[0].status, 200)
  t.equal(header(client.heads[0].headers, 'x-request-id'), 'abc', 'the response carries the request id')
  t.equal(Buffer.concat(client.chunks).toString(), 'hello')
  const o = policy.outcome
  t.equal(o.kind, 'ok')
  t.equal(o.status, 200)
  t.ok(o.rtt >= 0, "the peer's latency is measured")
  t.same(policy.ended, [undefined], 'the attempt ended once')
  t.same(policy.routeAsked, [false])
})

t.test('admission', async (t) => {
  t.test('shed at once: 503, x-doorman-shed and retry-after, no attempt', async (t) => {
    const route = new FakeRoute('app')
    const policy = new FakePolicy(route)
    policy.admission = 'queue-full'
    const client = new FakeClient()
    exchange(client, policy)
    t.equal(route.attempts.length, 0)
    t.same(policy.routeAsked, [], 'no route asked for')
    t.equal(client.answers.length, 1)
    const a = client.answers[0]
    t.equal(a.status, 503)
    t.equal(header(a.headers, 'x-doorman-shed'), 'queue-full')
    t.equal(header(a.headers, 'retry-after'), '1')
    t.equal(a.grpcStatus, GRPC_UNAVAILABLE, 'the gRPC form is UNAVAILABLE')
    t.equal(policy.outcome.kind, 'shed')
    t.equal(policy.outcome.shed, 'queue-full')
    t.equal(policy.outcome.status, 503)
  })

  t.test('a gRPC call shed: HTTP 200 with grpc-status UNAVAILABLE', async (t) => {
    const policy = new FakePolicy(new FakeRoute('app'))
    policy.admission = 'low-priority'
    exchange(new FakeClient({ grpc: true }), policy)
    t.equal(policy.outcome.status, 200)
    t.equal(policy.outcome.grpcStatus, String(GRPC_UNAVAILABLE))
  })

  t.test('queued, then granted: sent then', async (t) => {
    const route = new FakeRoute('app')
    const policy = new FakePolicy(route)
    policy.admission = 'queue'
    const client = new FakeClient()
    exchange(client, policy)
    t.equal(route.attempts.length, 0, 'nothing sent while queued')
    t.equal(policy.outcomes.length, 0)
    policy.waiter?.settle(null)
    t.equal(route.attempts.length, 1, 'sent on the grant')
    respond(route.attempts[0], 204, [])
    t.equal(policy.outcome.kind, 'ok')
  })

  t.test('queued, then shed by the queue', async (t) => {
    const route = new FakeRoute('app')
    const policy = new FakePolicy(route)
    policy.admission = 'queue'
    const client = new FakeClient()
    exchange(client, policy)
    policy.waiter?.settle('queue-timeout')
    t.equal(route.attempts.length, 0)
    t.equal(header(client.answers[0].headers, 'x-doorman-shed'), 'queue-timeout')
    t.equal(policy.outcome.kind, 'shed')
  })

  t.test('the client leaves while queued: the wait is cancelled; a later grant is only released', async (t) => {
    const route = new FakeRoute('app')
    const policy = new FakePolicy(route)
    policy.admission = 'queue'
    const client = new FakeClient()
    exchange(client, policy)
    const w = policy.waiter
    client.leave()
    t.same(policy.cancelled, [w], 'the waiter is cancelled')
    t.equal(policy.outcome.kind, 'abandoned')
    t.same(client.calls, [], 'nothing written to a client that left')
    w?.settle(null)
    t.equal(route.attempts.length, 0, 'a grant that comes anyway sends nothing')
    t.same(policy.outcomes.map((o) => o.kind), ['abandoned', 'late-grant'], 'and gives its slot straight back')
  })

  t.test('no route: the policy names the error', async (t) => {
    const policy = new FakePolicy(null)
    const client = new FakeClient()
    exchange(client, policy)
    t.equal(client.answers[0].status, 503)
    t.equal(header(client.answers[0].headers, 'x-doorman-error'), 'DOORMAN_ERR_NO_INSTANCE')
    t.equal(policy.outcome.kind, 'no-route')
  })

  t.test('a request doorman cannot forward faithfully is refused before any attempt', async (t) => {
    const route = new FakeRoute('app')
    const policy = new FakePolicy(route)
    const client = new FakeClient({ headers: ['connection', 'content-length'] })
    exchange(client, policy)
    t.equal(route.attempts.length, 0)
    t.equal(client.answers[0].status, 400)
    t.equal(policy.outcome.kind, 'error')
  })
})

t.test('retry', async (t) => {
  t.test('a refused connection: the second attempt goes elsewhere with the same body', async (t) => {
    const first = new FakeRoute('a')
    const second = new FakeRoute('b')
    const policy = new FakePolicy(first, second)
    const body = new PassThrough()
    body.end('payload')
    const client = new FakeClient({ method: 'POST', headers: ['content-length', '7'], body })
    exchange(client, policy)
    const a = first.attempts[0]
    // The first attempt reads the body; the Exchange keeps it to send again.
    const got: Buffer[] = []
    for await (const c of a.opts.body as AsyncIterable<Buffer>) got.push(c)
    t.equal(Buffer.concat(got).toString(), 'payload')
    a.handler.onResponseError?.(a.ctl, Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))
    t.same(policy.retries, ['connect'])
    t.same(policy.routeAsked, [false, true], 'the policy is asked for another route')
    t.same(policy.ended, [true], 'the failed attempt counts against the peer')
    t.equal(second.attempts.length, 1)
    const again: Buffer[] = []
    for await (const c of second.attempts[0].opts.body as AsyncIterable<Buffer>) again.push(c)
    t.equal(Buffer.concat(again).toString(), 'payload', 'the body is sent again whole')
    respond(second.attempts[0], 200, [], ['ok'])
    t.equal(policy.outcome.kind, 'ok')
    t.equal(client.answers.length, 0, 'the client never saw the first failure')
  })

  t.test("a shed answer is read to its end and dropped, then retried; the client sees only the second", async (t) => {
    const first = new FakeRoute('a')
    const second = new FakeRoute('b')
    const policy = new FakePolicy(first, second)
    policy.verdict = (s) => s === 503 ? 'retry' : 'pass'
    const client = new FakeClient()
    exchange(client, policy)
    respond(first.attempts[0], 503, ['x-doorman-shed', 'queue-full'], ['shed'])
    t.same(policy.retries, ['shed'])
    t.same(client.calls, ['proceed'], 'nothing of the shed answer reached the client')
    respond(second.attempts[0], 200, [], ['fine'])
    t.equal(Buffer.concat(client.chunks).toString(), 'fine')
    t.equal(policy.outcome.kind, 'ok')
  })

  t.test('every instance shed it: 503 naming that, after one retry', async (t) => {
    const first = new FakeRoute('a')
    const second = new FakeRoute('b')
    const policy = new FakePolicy(first, second)
    policy.verdict = () => 'retry'
    const client = new FakeClient()
    exchange(client, policy)
    respond(first.attempts[0], 503, [])
    respond(second.attempts[0], 503, [], ['shed again'])
    t.equal(client.heads.length, 1, 'the second shed answer is passed on: no third attempt')
    t.equal(client.heads[0].status, 503)
    t.equal(policy.retries.length, 1)
    t.equal(policy.outcome.kind, 'ok')
  })

  t.test('a body too large to keep is not retried', async (t) => {
    const first = new FakeRoute('a')
    const policy = new FakePolicy(first, new FakeRoute('b'))
    policy.maxRetryBody = 0
    const body = new PassThrough()
    body.end('x')
    const client = new FakeClient({ method: 'POST', headers: ['content-length', '1'], body })
    exchange(client, policy)
    const a = first.attempts[0]
    a.handler.onResponseError?.(a.ctl, Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }))
    t.same(policy.retries, [])
    t.equal(client.answers[0].status, 502)
    t.equal(policy.outcome.kind, 'error')
  })
})

t.test('backpressure: the peer is paused while the client reads nothing, resumed when it drains', async (t) => {
  const route = new FakeRoute('app')
  const policy = new FakePolicy(route)
  policy.writeTimeout = 60_000
  const client = new FakeClient()
  exchange(client, policy)
  const a = route.attempts[0]
  a.ctl.rawHeaders = []
  a.handler.onResponseStart?.(a.ctl, 200, {}, 'OK')
  client.accepts = false
  a.handler.onResponseData?.(a.ctl, Buffer.from('1'))
  t.ok(a.ctl.paused, 'paused on a full client buffer')
  client.drained()
  t.notOk(a.ctl.paused, 'resumed on drain')
  a.handler.onResponseData?.(a.ctl, Buffer.from('2'))
  a.handler.onResponseEnd?.(a.ctl, {})
  t.equal(policy.outcome.kind, 'ok')
  t.equal(Buffer.concat(client.chunks).toString(), '12')
})

t.test('a client that reads nothing for the write timeout is cut, and the peer aborted', async (t) => {
  const route = new FakeRoute('app')
  const policy = new FakePolicy(route)
  policy.writeTimeout = 20
  const client = new FakeClient()
  exchange(client, policy)
  const a = route.attempts[0]
  a.handler.onResponseStart?.(a.ctl, 200, {}, 'OK')
  client.accepts = false
  a.handler.onResponseData?.(a.ctl, Buffer.from('x'))
  await waitFor('the stall', () => policy.outcomes.length === 1, 5000, 5)
  t.equal(policy.outcome.kind, 'aborted')
  t.equal(policy.outcome.why, 'stall')
  t.ok(a.ctl.aborted, "the peer's request is aborted")
  t.ok(client.calls.includes('reset'), 'the client is cut')
})

t.test('trailers: passed on, and the gRPC status read from them', async (t) => {
  const route = new FakeRoute('app')
  const policy = new FakePolicy(route)
  const client = new FakeClient({ method: 'POST', grpc: true, headers: ['content-type', 'application/grpc'] })
  exchange(client, policy)
  respond(route.attempts[0], 200, ['content-type', 'application/grpc'], ['\0\0\0\0\0'], ['grpc-status', '5', 'grpc-message', 'not found'])
  t.same((client.trailers ?? []).map(String), ['grpc-status', '5', 'grpc-message', 'not found'])
  t.equal(policy.outcome.grpcStatus, '5')

  const plain = new FakeRoute('app')
  const p2 = new FakePolicy(plain)
  const c2 = new FakeClient()
  exchange(c2, p2)
  respond(plain.attempts[0], 200, [], ['x'])
  t.equal(c2.trailers, null, 'no trailers: end(null)')
  t.equal(p2.outcome.grpcStatus, null, 'no gRPC status for a plain request')
})

t.test('deadline', async (t) => {
  t.test('grpc-timeout passes while the peer works: DEADLINE_EXCEEDED, the peer aborted, the slot freed', async (t) => {
    const route = new FakeRoute('app')
    const policy = new FakePolicy(route)
    const client = new FakeClient({ method: 'POST', grpc: true, grpcTimeout: '15m' })
    exchange(client, policy)
    const sent = route.attempts[0].opts.headers as string[]
    t.equal(sent.length > 0, true)
    await waitFor('the deadline', () => policy.outcomes.length === 1, 5000, 5)
    t.equal(policy.outcome.kind, 'error')
    t.equal(policy.outcome.why, 'deadline')
    t.ok(policy.outcome.timedOut)
    t.equal(policy.outcome.grpcStatus, String(GRPC_DEADLINE_EXCEEDED))
    t.equal(client.answers[0].grpcStatus, GRPC_DEADLINE_EXCEEDED)
    t.ok(route.attempts[0].ctl.aborted, "the peer's stream is cancelled")
    // What the peer does after that is not relayed.
    respond(route.attempts[0], 200, [], ['late'])
    t.equal(client.heads.length, 0)
    t.equal(policy.outcomes.length, 1)
  })

  t.test('the peer is sent what is left of the deadline', async (t) => {
    const route = new FakeRoute('app')
    const policy = new FakePolicy(route)
    const client = new FakeClient({ method: 'POST', grpc: true, grpcTimeout: '5S', headers: ['grpc-timeout', '5S'] })
    exchange(client, policy)
    const left = header(route.attempts[0].opts.headers as string[], 'grpc-timeout') ?? ''
    t.match(left, /^\d+m$/)
    t.ok(Number(left.slice(0, -1)) <= 5000 && Number(left.slice(0, -1)) > 4000, `in milliseconds, at most 5 s (${left})`)
    respond(route.attempts[0], 200, [], [], ['grpc-status', '0'])
    t.equal(policy.outcome.kind, 'ok')
  })

  t.test('the deadline passes while queued: expired, the wait cancelled, nothing sent', async (t) => {
    const route = new FakeRoute('app')
    const policy = new FakePolicy(route)
    policy.admission = 'queue'
    const client = new FakeClient({ grpc: true, grpcTimeout: '10m' })
    exchange(client, policy)
    await waitFor('the deadline', () => policy.outcomes.length === 1, 5000, 5)
    t.equal(policy.outcome.kind, 'expired')
    t.equal(policy.cancelled.length, 1)
    t.equal(client.answers[0].grpcStatus, GRPC_DEADLINE_EXCEEDED)
    policy.waiter?.settle(null)
    t.equal(route.attempts.length, 0)
  })

  t.test('after the head went out, a deadline ends the call in its trailers', async (t) => {
    const route = new FakeRoute('app')
    const policy = new FakePolicy(route)
    const client = new FakeClient({ method: 'POST', grpc: true, grpcTimeout: '15m' })
    exchange(client, policy)
    const a = route.attempts[0]
    a.handler.onResponseStart?.(a.ctl, 200, {}, 'OK')
    a.handler.onResponseData?.(a.ctl, Buffer.from('\0\0\0\0\0'))
    await waitFor('the deadline', () => policy.outcomes.length === 1, 5000, 5)
    t.same(client.failedAfterHead.map((f) => f.grpcStatus), [GRPC_DEADLINE_EXCEEDED])
    t.equal(client.answers.length, 0)
  })
})

t.test('the client goes away while the peer works: the peer aborted, the slot freed, nothing written', async (t) => {
  const route = new FakeRoute('app')
  const policy = new FakePolicy(route)
  const client = new FakeClient()
  exchange(client, policy)
  const a = route.attempts[0]
  client.leave()
  t.ok(a.ctl.aborted, "the peer's request is aborted")
  t.equal(policy.outcome.kind, 'aborted')
  t.equal(policy.outcome.why, 'client')
  t.equal(policy.outcome.rtt, -1, "no head came: the client's impatience says nothing of the peer")
  respond(a, 200, [], ['late'])
  t.equal(client.heads.length, 0, 'a response after that goes nowhere')
  t.equal(policy.outcomes.length, 1)
})

t.test('a drain cut ends an exchange in flight once', async (t) => {
  const route = new FakeRoute('app')
  const policy = new FakePolicy(route)
  const client = new FakeClient()
  const ex = exchange(client, policy)
  ex.cut()
  ex.cut()
  t.equal(policy.outcome.why, 'cut')
  t.ok(client.calls.includes('reset'))
})

t.test('peer reset', async (t) => {
  t.test('REFUSED_STREAM before any head: the peer did not process it, so even a POST goes elsewhere', async (t) => {
    const first = new FakeRoute('a')
    const second = new FakeRoute('b')
    const policy = new FakePolicy(first, second)
    const client = new FakeClient({ method: 'POST' })
    exchange(client, policy)
    const a = first.attempts[0]
    a.ctl.stream = { rstCode: 7, closed: true, destroyed: true, close: () => {} }
    a.handler.onResponseError?.(a.ctl, Object.assign(new Error('stream reset'), { code: 'UND_ERR_SOCKET' }))
    t.same(policy.retries, ['reset'])
    t.same(policy.ended, [undefined], 'a refused stream does not count against the peer')
    respond(second.attempts[0], 200, [], ['ok'])
    t.equal(policy.outcome.kind, 'ok')
  })

  t.test('a reset before the head of a POST: not retried (the peer may have acted), 502', async (t) => {
    const first = new FakeRoute('a')
    const policy = new FakePolicy(first, new FakeRoute('b'))
    const client = new FakeClient({ method: 'POST' })
    exchange(client, policy)
    const a = first.attempts[0]
    a.handler.onResponseError?.(a.ctl, Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }))
    t.same(policy.retries, [])
    t.equal(client.answers[0].status, 502)
    t.equal(header(client.answers[0].headers, 'x-doorman-error'), 'DOORMAN_ERR_UPSTREAM_CONNECT')
    t.equal(policy.outcome.kind, 'error')
    t.same(policy.ended, [true])
  })

  t.test('a reset of an idempotent request before its head is retried', async (t) => {
    const first = new FakeRoute('a')
    const second = new FakeRoute('b')
    const policy = new FakePolicy(first, second)
    exchange(new FakeClient({ method: 'GET' }), policy)
    const a = first.attempts[0]
    a.handler.onResponseError?.(a.ctl, Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))
    t.same(policy.retries, ['reset'])
    respond(second.attempts[0], 200, [])
    t.equal(policy.outcome.kind, 'ok')
  })

  t.test('a reset after the head: the client side fails after its head (its adapter cuts HTTP, ends gRPC UNAVAILABLE)', async (t) => {
    for (const grpc of [false, true]) {
      const route = new FakeRoute('a')
      const policy = new FakePolicy(route, new FakeRoute('b'))
      const client = new FakeClient({ grpc })
      exchange(client, policy)
      const a = route.attempts[0]
      a.handler.onResponseStart?.(a.ctl, 200, {}, 'OK')
      a.handler.onResponseData?.(a.ctl, Buffer.from('part'))
      a.handler.onResponseError?.(a.ctl, Object.assign(new Error('reset'), { code: 'ECONNRESET' }))
      t.same(policy.retries, [], 'never retried once the client saw bytes')
      t.same(client.failedAfterHead.map((f) => f.grpcStatus), [GRPC_UNAVAILABLE])
      t.equal(policy.outcome.kind, 'error')
      t.equal(policy.outcome.status, 200)
    }
  })
})
