// The mTLS metrics, on the sidecar's one registry. Hot-path counters are plain Maps copied at scrape time, as in
// src/metrics; labels are bounded (modes, reasons; the destination service outbound) — never a peer's identity.
import { Counter, Gauge, type Registry } from 'prom-client'
import type { CertStore } from './store.js'

export class TlsStats {
  /** Inbound connections accepted, by mode (`mtls`, `plaintext`). */
  readonly connections = new Map<string, number>()
  /** Inbound requests, by mode. */
  readonly requests = new Map<string, number>()
  /** Inbound TLS connections refused, by reason (handshake, no-client-cert, untrusted, expired, not-yet-valid, no-spiffe-id, not-ready). */
  readonly handshakeFailures = new Map<string, number>()
  /** Plaintext connections refused in `strict`. */
  plaintextRefused = 0
  /** Requests denied by DOORMAN_ALLOW, by reason. */
  readonly denied = new Map<string, number>()
  /** Outbound mTLS failures by `service\treason` (impostor, handshake, untrusted, plaintext-refused). */
  readonly outboundFailures = new Map<string, number>()

  static inc (m: Map<string, number>, key: string): void { m.set(key, (m.get(key) ?? 0) + 1) }
}

/** Registers the mTLS metrics on `registry`, read from `stats` and the certificate store. */
export function registerTlsMetrics (registry: Registry, stats: TlsStats, store: CertStore | null): void {
  const copy = (c: Counter<string>, label: string, m: Map<string, number>): void => {
    c.reset()
    for (const [k, v] of m) c.inc({ [label]: k }, v)
  }
  /* eslint-disable no-new */
  new Counter({ name: 'doorman_tls_connections_total', help: 'Inbound connections accepted, by mode (mtls: a verified peer; plaintext).', labelNames: ['mode'], registers: [registry], collect () { copy(this, 'mode', stats.connections) } })
  new Counter({ name: 'doorman_tls_requests_total', help: 'Inbound requests (HTTP/1.1 requests and HTTP/2 streams), by mode (mtls, plaintext).', labelNames: ['mode'], registers: [registry], collect () { copy(this, 'mode', stats.requests) } })
  new Counter({ name: 'doorman_tls_handshake_failures_total', help: 'Inbound TLS connections refused, by reason (handshake, no-client-cert, untrusted, expired, not-yet-valid, no-spiffe-id, not-ready).', labelNames: ['reason'], registers: [registry], collect () { copy(this, 'reason', stats.handshakeFailures) } })
  new Counter({ name: 'doorman_tls_plaintext_refused_total', help: 'Plaintext inbound connections refused (DOORMAN_MTLS=strict).', registers: [registry], collect () { this.reset(); this.inc(stats.plaintextRefused) } })
  new Counter({ name: 'doorman_denied_total', help: 'Inbound requests denied by DOORMAN_ALLOW, by reason (unauthenticated, not-allowed); they never reach the app or the limiter.', labelNames: ['reason'], registers: [registry], collect () { copy(this, 'reason', stats.denied) } })
  new Counter({
    name: 'doorman_outbound_tls_failures_total',
    help: 'Outbound mTLS attempts that failed, by destination service and reason (impostor: a valid certificate of another identity than the registry lists; handshake; plaintext-refused: strict and the instance takes no mTLS).',
    labelNames: ['service', 'reason'],
    registers: [registry],
    collect () {
      this.reset()
      for (const [k, v] of stats.outboundFailures) { const tab = k.indexOf('\t'); this.inc({ service: k.slice(0, tab), reason: k.slice(tab + 1) }, v) }
    }
  })
  if (store === null) return
  new Gauge({ name: 'doorman_tls_cert_expiry_seconds', help: 'Seconds until the certificate in use runs out (negative once it has).', registers: [registry], collect () { const v = store.expiresIn(); if (v !== undefined) this.set(v) } })
  new Gauge({ name: 'doorman_tls_cert_ready', help: '1 while doorman holds a usable certificate (read, key matching, SPIFFE ID, within its validity); 0 makes /readyz fail.', registers: [registry], collect () { this.set(store.status().problem === null ? 1 : 0) } })
  new Counter({ name: 'doorman_tls_reloads_total', help: 'Certificate files read with a change, by result (ok: the pair taken; refused: the last good pair kept).', labelNames: ['result'], registers: [registry], collect () { this.reset(); this.inc({ result: 'ok' }, store.reloads.ok); this.inc({ result: 'refused' }, store.reloads.refused) } })
  /* eslint-enable no-new */
}
