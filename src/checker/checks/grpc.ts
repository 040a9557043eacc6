// `grpc`: the standard health protocol, grpc.health.v1.Health/Check with the definition's service name, over
// cleartext HTTP/2 (h2c) or TLS verified against a CA file. SERVING is healthy; NOT_SERVING, SERVICE_UNKNOWN (or
// NOT_FOUND), UNIMPLEMENTED (no health service) are unhealthy answers (`status`); a deadline passed is a `timeout`.
// The client is @grpc/grpc-js with the health service's messages described for @grpc/proto-loader (no protobuf
// framing of our own). One channel per target is kept between rounds; channels idle for longer than the keep-alive
// are closed. grpc-js is loaded at the first grpc check (a checker without one, and every sidecar, never loads it).
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import type * as Grpc from '@grpc/grpc-js'
import type { GrpcCheck } from '../../check/spec.js'
import type { CheckCall, CheckModule, CheckOutcome } from './types.js'

// grpc/health/v1/health.proto (the Check method), as protobufjs JSON: what proto-loader reads from a .proto file.
export const HEALTH_PROTO = {
  nested: {
    grpc: {
      nested: {
        health: {
          nested: {
            v1: {
              nested: {
                HealthCheckRequest: { fields: { service: { type: 'string', id: 1 } } },
                HealthCheckResponse: {
                  fields: { status: { type: 'ServingStatus', id: 1 } },
                  nested: { ServingStatus: { values: { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } } }
                },
                Health: { methods: { Check: { requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse' } } }
              }
            }
          }
        }
      }
    }
  }
}

type HealthClient = Grpc.Client & {
  Check: (req: { service: string }, options: Grpc.CallOptions, cb: (err: Grpc.ServiceError | null, res?: { status: string }) => void) => Grpc.ClientUnaryCall
}
type HealthCtor = new (address: string, creds: Grpc.ChannelCredentials, options?: Grpc.ChannelOptions) => HealthClient

let loaded: Promise<{ grpc: typeof Grpc, Health: HealthCtor }> | null = null
async function load (): Promise<{ grpc: typeof Grpc, Health: HealthCtor }> {
  loaded ??= (async () => {
    const grpc = await import('@grpc/grpc-js')
    const protoLoader = await import('@grpc/proto-loader')
    const def = protoLoader.fromJSON(HEALTH_PROTO as unknown as Parameters<typeof protoLoader.fromJSON>[0], { enums: String, defaults: true })
    const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { health: { v1: { Health: HealthCtor } } } }
    return { grpc, Health: pkg.grpc.health.v1.Health }
  })()
  return await loaded
}

export class GrpcCheckModule implements CheckModule<GrpcCheck> {
  readonly type = 'grpc' as const
  readonly #keepAlive: number
  readonly #clients = new Map<string, { client: HealthClient, usedAt: number }>()
  #sweptAt = performance.now()

  constructor (opts: { keepAlive: number }) {
    this.#keepAlive = opts.keepAlive
  }

  #client (grpc: typeof Grpc, Health: HealthCtor, spec: GrpcCheck, call: CheckCall): HealthClient {
    const address = `${call.host.includes(':') ? `[${call.host}]` : call.host}:${call.port}`
    const key = `${address}\n${spec.tls === undefined ? '' : `tls:${spec.tls.ca ?? ''}`}`
    const now = performance.now()
    let c = this.#clients.get(key)
    if (c === undefined) {
      const creds = spec.tls === undefined
        ? grpc.credentials.createInsecure()
        : grpc.credentials.createSsl(spec.tls.ca !== undefined ? readFileSync(spec.tls.ca) : null)
      // A target that was down is asked again at its next probe, not after grpc-js's default backoff (up to 2 min).
      const client = new Health(address, creds, {
        'grpc.initial_reconnect_backoff_ms': Math.min(1000, call.timeout),
        'grpc.max_reconnect_backoff_ms': Math.min(this.#keepAlive, 5000),
        'grpc.enable_retries': 0
      })
      c = { client, usedAt: now }
      this.#clients.set(key, c)
    }
    c.usedAt = now
    if (now - this.#sweptAt > this.#keepAlive) {
      this.#sweptAt = now
      for (const [k, other] of this.#clients) if (now - other.usedAt > this.#keepAlive) { other.client.close(); this.#clients.delete(k) }
    }
    return c.client
  }

  async probe (spec: GrpcCheck, call: CheckCall): Promise<CheckOutcome> {
    // grpc-js sends the target's host as the TLS server name, which Node refuses for an IP address (RFC 6066).
    if (spec.tls !== undefined && isIP(call.host) !== 0) return { outcome: 'error', detail: 'grpc over TLS needs a host name, not an IP address' }
    let client: HealthClient
    let grpc: typeof Grpc
    try {
      const g = await load()
      grpc = g.grpc
      client = this.#client(grpc, g.Health, spec, call)
    } catch (err) {
      return { outcome: 'error', detail: (err as NodeJS.ErrnoException).code ?? 'client' }
    }
    return await new Promise((resolve) => {
      client.Check({ service: spec.service }, { deadline: Date.now() + call.timeout }, (err, res) => {
        if (err === null) {
          const status = res?.status ?? 'UNKNOWN'
          resolve({ outcome: status === 'SERVING' ? 'ok' : 'status', detail: status })
          return
        }
        switch (err.code) {
          case grpc.status.DEADLINE_EXCEEDED: resolve({ outcome: 'timeout', detail: 'DEADLINE_EXCEEDED' }); return
          case grpc.status.UNIMPLEMENTED: resolve({ outcome: 'status', detail: 'UNIMPLEMENTED' }); return
          case grpc.status.NOT_FOUND: resolve({ outcome: 'status', detail: 'SERVICE_UNKNOWN' }); return
          case grpc.status.UNAVAILABLE: resolve({ outcome: /ECONNREFUSED/.test(err.details) ? 'refused' : 'error', detail: `UNAVAILABLE: ${err.details.slice(0, 200)}` }); return
          default: resolve({ outcome: 'error', detail: grpc.status[err.code] ?? String(err.code) })
        }
      })
    })
  }

  async close (): Promise<void> {
    for (const c of this.#clients.values()) c.client.close()
    this.#clients.clear()
  }
}
