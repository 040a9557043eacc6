// The load generator's process: runs autocannon on request from the runner (over IPC), so the load generator never
// shares an event loop with anything being measured.
import autocannon from 'autocannon'

export interface LoadRequest {
  url: string
  connections: number
  duration: number
  /**
   * Send exactly this many requests, then end once every one is answered (duration then only bounds the run): a run
   * cut by the clock abandons the requests in flight, and a proxy closes each connection whose request was abandoned.
   */
  amount?: number
  /** Requests per second across all connections (open-ended when absent). */
  rate?: number
  /** Extra request headers (the outbound section names the service with Host). */
  headers?: Record<string, string>
}
export interface LoadResult {
  requests: number
  seconds: number
  p50: number
  p99: number
  non2xx: number
  errors: number
  timeouts: number
}

process.on('message', (msg: LoadRequest) => {
  const started = process.hrtime.bigint()
  autocannon({ url: msg.url, connections: msg.connections, duration: msg.duration, amount: msg.amount, pipelining: 1, timeout: 10, overallRate: msg.rate, headers: msg.headers }, (err, r) => {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    if (err !== null && err !== undefined) { process.send?.({ error: String(err) }); return }
    const out: LoadResult = {
      requests: r.requests.total,
      seconds,
      p50: r.latency.p50,
      p99: r.latency.p99,
      non2xx: r.non2xx,
      errors: r.errors,
      timeouts: r.timeouts
    }
    process.send?.(out)
  })
})
process.on('disconnect', () => { process.exit(0) })
