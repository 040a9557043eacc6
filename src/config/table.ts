// The one table of doorman's settings. The config schema (src/config/index.ts), the injector's annotation
// mapping and docs/configuration.md are all derived from it, so a setting exists in exactly one place.

/** Service names: what a Host header can carry (lower-case letters, digits, `-`, `.`, `_`), 1..253 characters. */
export const SERVICE_NAME = /^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$/
/** Organisation and environment labels (DOORMAN_ORG, DOORMAN_ENV, the checker's scopes): like service names, shorter. */
export const LABEL = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/

export type Kind =
  | 'port' // 0..65535
  | 'int' // positive integer (>= 1)
  | 'count' // non-negative integer (>= 0)
  | 'percent' // 0..100
  | 'number' // positive finite number
  | 'duration' // 250ms, 5s, 2m, 1h (a bare number is milliseconds)
  | 'string'
  | 'host'
  | 'list' // comma-separated, empty entries dropped
  | 'globs' // comma-separated service-name globs (`*` any run, `?` one character), empty entries dropped
  | 'json' // DOORMAN_APP_PROBES: the app's probes by lane path
  | 'settings' // a JSON object of sidecar settings (DOORMAN_* → value)
  | 'resources' // a JSON container `resources` (requests / limits of cpu / memory)
  | 'enum'
  | 'registry' // memory | redis:// | rediss:// | redis+sentinel:// | redis+cluster:// | file:///dir
  | 'app-registry' // empty | zookeeper://host:port[,host:port…][/root][?port=N]
  | 'services' // comma-separated service (Dubbo interface) names, empty entries dropped
  | 'level' // pino level
  | 'path' // a file path
  | 'nice' // a scheduling priority (nice value), -20..19
  | 'allow' // DOORMAN_ALLOW: comma-separated SPIFFE ID patterns, each optionally `/path/prefix=`
  | 'label' // an organisation or environment name (lower-case letters, digits, ., _, -), or empty
  | 'check' // a checker's check in short form: http:PORT/PATH, https:PORT/PATH, tcp:PORT, grpc:PORT/SERVICE, or empty

export type Scope = 'sidecar' | 'checker' | 'webhook' | 'all'

export interface Setting {
  /** Environment variable name. */
  readonly env: string
  readonly kind: Kind
  /** Default as a string, parsed like a user value; undefined = no default. */
  readonly default?: string
  /** Required for `doorman run` (the sidecar). */
  readonly required?: boolean
  readonly values?: readonly string[]
  readonly scope: Scope
  /** False for settings the injector must not copy from annotations (it sets them itself). */
  readonly annotatable?: boolean
  /** Secrets are redacted from logs. */
  readonly secret?: boolean
  readonly doc: string
}

/** The sidecar's resources when neither the injector's DOORMAN_SIDECAR_RESOURCES nor the pod's annotations say. */
export const SIDECAR_RESOURCES = Object.freeze({ requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } })

export const SETTINGS: readonly Setting[] = Object.freeze([
  // Ports
  { env: 'DOORMAN_INBOUND_PORT', kind: 'port', default: '7080', scope: 'sidecar', doc: 'Business traffic from outside the pod, proxied to the app.' },
  { env: 'DOORMAN_OUTBOUND_PORT', kind: 'port', default: '7081', scope: 'sidecar', doc: "The app's calls to other services, load-balanced over the registry (loopback only; 0 = off)." },
  { env: 'DOORMAN_ADMIN_PORT', kind: 'port', default: '7090', scope: 'all', doc: 'The admin / probe lane: probes, metrics, state and drain, on its own thread.' },
  { env: 'DOORMAN_BIND_HOST', kind: 'host', default: '0.0.0.0', scope: 'all', doc: "Address the inbound and admin listeners bind to (the outbound listener always binds loopback); `doorman checker`'s admin listener too." },
  // The app
  { env: 'DOORMAN_APP_PORT', kind: 'port', required: true, scope: 'sidecar', doc: "The app's port on `DOORMAN_APP_HOST`." },
  { env: 'DOORMAN_APP_HOST', kind: 'host', default: '127.0.0.1', scope: 'sidecar', doc: "The app's host (normally loopback: the app shares the pod's network)." },
  { env: 'DOORMAN_APP_PROTOCOL', kind: 'enum', values: ['http1', 'h2c'], default: 'http1', scope: 'sidecar', doc: 'How doorman talks to the app: `http1` or `h2c` (cleartext HTTP/2 with prior knowledge, as gRPC servers speak). Clients may use either on the inbound port; a gRPC call to an `http1` app is answered UNAVAILABLE naming this setting.' },
  { env: 'DOORMAN_SERVICE', kind: 'string', default: '', scope: 'sidecar', doc: 'Service name (required when a registry other than `memory` is set).' },
  { env: 'DOORMAN_CLUSTER', kind: 'string', default: 'default', scope: 'sidecar', doc: 'Cluster (placement group) within the service.' },
  { env: 'DOORMAN_ZONE', kind: 'string', default: '', scope: 'sidecar', doc: 'Zone within the service.' },
  { env: 'DOORMAN_ORG', kind: 'label', default: '', scope: 'sidecar', doc: "The instance's organisation: a scope of `doorman checker`'s mode switch and canary (`org:NAME`)." },
  { env: 'DOORMAN_ENV', kind: 'label', default: '', scope: 'sidecar', doc: "The instance's environment: a scope of `doorman checker`'s mode switch (`env:NAME`)." },
  { env: 'DOORMAN_CHECK', kind: 'check', default: '', scope: 'sidecar', doc: "The check `doorman checker` runs on this instance instead of the lane's `/readyz`: `http:8080/health`, `https:8443/health`, `tcp:8080` or `grpc:9090/pay.v1.Pay` (grpc.health.v1 Check)." },
  // Limits
  { env: 'DOORMAN_MAX_CONCURRENCY', kind: 'int', default: '100', scope: 'sidecar', doc: 'Most business requests in flight to the app at once.' },
  { env: 'DOORMAN_LIMIT_MODE', kind: 'enum', values: ['static', 'adaptive'], default: 'static', scope: 'sidecar', doc: "`static` (the limit is `DOORMAN_MAX_CONCURRENCY`) or `adaptive` (the limit follows the app's latency between `DOORMAN_LIMIT_MIN` and `DOORMAN_MAX_CONCURRENCY`)." },
  { env: 'DOORMAN_LIMIT_MIN', kind: 'int', default: '4', scope: 'sidecar', doc: 'Floor of the adaptive limit.' },
  { env: 'DOORMAN_CRITICAL_PATHS', kind: 'list', default: '', scope: 'sidecar', doc: 'Comma-separated path globs (`/checkout/*`) of critical requests: they get reserved capacity and go first.' },
  { env: 'DOORMAN_LOW_PATHS', kind: 'list', default: '', scope: 'sidecar', doc: 'Comma-separated path globs of low-priority requests: shed first under pressure.' },
  { env: 'DOORMAN_CRITICAL_RESERVE', kind: 'percent', default: '20', scope: 'sidecar', doc: 'Percent of the limit only critical requests may use (applies when `DOORMAN_CRITICAL_PATHS` is set).' },
  { env: 'DOORMAN_FAIRNESS', kind: 'enum', values: ['flow', 'off'], default: 'flow', scope: 'sidecar', doc: "`flow`: when the limit is reached, queued requests are served fairly across flows (callers: the mTLS identity, else `DOORMAN_FLOW_HEADER` from a trusted hop, else the client address), round-robin within each priority class, and a full queue sheds the newest request of the flow holding the most of it (`x-doorman-shed: flow-share`), so one caller's flood stays that caller's; `off`: one FIFO queue per class, a full queue sheds the newcomer ([limits.md](limits.md#flows-and-fair-queuing))." },
  { env: 'DOORMAN_FLOW_HEADER', kind: 'string', default: '', scope: 'sidecar', doc: "A request header naming the caller (`x-tenant-id`), set by a trusted proxy in front: honoured only when `DOORMAN_TRUSTED_HOPS` is 1 or more, as the forwarded headers are; otherwise, and when absent, a flow is the caller's mTLS identity, else its client address. HTTP/2: the streams of one connection are one flow unless the header says otherwise." },
  { env: 'DOORMAN_MAX_QUEUE', kind: 'count', default: '100', scope: 'sidecar', doc: 'Most requests waiting for a slot; beyond it: shed at once.' },
  { env: 'DOORMAN_QUEUE_TIMEOUT', kind: 'duration', default: '1s', scope: 'sidecar', doc: 'Longest wait for a slot; beyond it: shed.' },
  { env: 'DOORMAN_UPSTREAM_TIMEOUT', kind: 'duration', default: '30s', scope: 'sidecar', doc: "Longest wait for the app's response headers." },
  { env: 'DOORMAN_CLIENT_WRITE_TIMEOUT', kind: 'duration', default: '30s', scope: 'sidecar', doc: "Longest a response may wait on a client that reads nothing (a write that can't go out because the client stopped reading): beyond it doorman closes the client's connection, cancels the request to the app and frees its slot (`doorman_client_errors_total{kind=\"write-timeout\"}`). The inbound and outbound lanes." },
  { env: 'DOORMAN_TRUSTED_HOPS', kind: 'count', default: '0', scope: 'sidecar', doc: "Proxies in front of doorman (an ingress, a load balancer) trusted to set `x-forwarded-proto`, `-host` and `-port`, as Envoy's `xff_num_trusted_hops`: 0 (doorman is the edge) replaces what the client sent with what doorman saw; 1 or more keeps them (and adds them when absent). `x-forwarded-for` is appended to either way ([headers.md](headers.md))." },
  { env: 'DOORMAN_MAX_UPGRADES', kind: 'int', default: '1000', scope: 'sidecar', doc: 'Most upgraded (WebSocket) connections open at once; a separate cap from the request limit.' },
  { env: 'DOORMAN_MAX_HEADER_SIZE', kind: 'int', default: '16384', scope: 'sidecar', doc: 'Largest request head in bytes; larger ones are answered 431 and never reach the app.' },
  { env: 'DOORMAN_HEADERS_TIMEOUT', kind: 'duration', default: '10s', scope: 'sidecar', doc: 'Longest time a client may take to send a request head; slower ones are answered 408. On HTTP/2, a connection whose first request head (HEADERS and its CONTINUATIONs) is not complete in this time is closed (GOAWAY).' },
  { env: 'DOORMAN_IDLE_TIMEOUT', kind: 'duration', default: '60s', scope: 'sidecar', doc: 'A client connection with nothing in flight for this long is closed, on both business ports: HTTP/2 with a GOAWAY (clients such as grpc-js reconnect on their next call), HTTP/1.1 keep-alive after it was told the timeout in `Keep-Alive: timeout=`. A consumer\'s sidecar keeps its connections to a provider (and over mTLS their TLS sessions) as long; behind a load balancer, set it above the balancer\'s own idle timeout (AWS ALB: 60 s) so that the balancer closes first.' },
  { env: 'DOORMAN_MAX_CONNECTIONS', kind: 'count', default: '10000', scope: 'sidecar', doc: 'Most client connections open at once on each business port (inbound, outbound); beyond it a new connection is closed at accept (`doorman_connections_closed_total{reason="limit"}`). 0 = no cap.' },
  // Identity: mTLS and authorization
  { env: 'DOORMAN_MTLS', kind: 'enum', values: ['off', 'permissive', 'strict'], default: 'off', scope: 'sidecar', doc: '`off`; `permissive`: the inbound port takes mTLS and plaintext alike (told apart by the first bytes), and the outbound lane originates mTLS to instances that take it; `strict`: plaintext business traffic is refused both ways. With mTLS on and no usable certificate, `/readyz` fails ([security.md](security.md)).' },
  { env: 'DOORMAN_TLS_DIR', kind: 'path', default: '/var/run/secrets/spiffe.io', scope: 'sidecar', doc: "The directory of `tls.crt`, `tls.key` and `ca.crt` (cert-manager csi-driver-spiffe's layout; the SPIFFE ID is the certificate's URI SAN), watched and reloaded live; a broken pair is refused and the last good one kept." },
  { env: 'DOORMAN_ALLOW', kind: 'allow', default: '', scope: 'sidecar', doc: 'Callers allowed to call the app: comma-separated SPIFFE ID patterns (`*` = one path segment, `spiffe://cluster.local/ns/shop/sa/*`), each optionally for a path prefix (`/admin/=spiffe://cluster.local/ns/ops/sa/oncall`). Empty: every authenticated caller (in `permissive`, plaintext ones too). A denied request gets `403` with `x-doorman-denied` (gRPC: status 7), never reaching the app or the limiter. Needs `DOORMAN_MTLS`.' },
  // Registry
  { env: 'DOORMAN_REGISTRY', kind: 'registry', default: 'memory', scope: 'all', secret: true, doc: '`memory`, `redis://…`, `rediss://…`, `redis+sentinel://…`, `redis+cluster://…`, or `file:///directory` (several processes on one machine, no Redis).' },
  { env: 'DOORMAN_ADVERTISE_HOST', kind: 'host', scope: 'sidecar', annotatable: false, doc: 'The host registered for this instance; defaults to `$POD_IP`, else 127.0.0.1.' },
  { env: 'DOORMAN_REGISTRY_TTL', kind: 'duration', default: '15s', scope: 'all', doc: 'An instance that stops heartbeating (every TTL/3) leaves the registry after this; so does a `doorman checker` replica its ring (the others take its share over then).' },
  // The app's own registry (apps that register themselves: Dubbo on ZooKeeper)
  { env: 'DOORMAN_APP_REGISTRY', kind: 'app-registry', default: '', scope: 'sidecar', doc: "The registry the app registers itself in, for apps that don't use doorman's: `zookeeper://host:2181[,host2:2181…]/dubbo` (Dubbo on ZooKeeper; the path is Dubbo's root, `/dubbo` when absent; `?port=20880` when the app's Dubbo port is not `DOORMAN_APP_PORT`). Readiness (`/readyz` and `/app-health/<c>/readyz`) then waits until the app's own provider entries for this pod's address are there, and a drain first disables the instance for the app's consumers (a Dubbo override) ([lifecycle.md](lifecycle.md#apps-that-register-themselves-dubbo-on-zookeeper)). Empty: off." },
  { env: 'DOORMAN_APP_SERVICES', kind: 'services', default: '', scope: 'sidecar', doc: 'With `DOORMAN_APP_REGISTRY`: the services (Dubbo interfaces) the app must have registered before it is ready, comma-separated. Empty: every one it registers, once 5s have passed without a new one.' },
  { env: 'DOORMAN_REGISTER_DELAY', kind: 'duration', default: '0s', scope: 'sidecar', doc: 'Extra wait after the app is ready before registering.' },
  // Outbound lane: retry budget
  { env: 'DOORMAN_RETRY_BUDGET', kind: 'percent', default: '20', scope: 'sidecar', doc: "Outbound lane: retries (a shed answer sent elsewhere, a refused or reset connection tried again) are allowed only while the retries of the last 10 s stay within this percent of the requests to the service (Envoy's and Linkerd's retry budget); a call not retried for the budget gets the provider's own answer ([limits.md](limits.md#retry-budget))." },
  { env: 'DOORMAN_RETRY_MIN_PER_SECOND', kind: 'count', default: '10', scope: 'sidecar', doc: 'Outbound lane: retries per second allowed on top of `DOORMAN_RETRY_BUDGET`, per service (so a service called rarely can still retry).' },
  // Outbound lane: passive outlier ejection
  { env: 'DOORMAN_OUTLIER_FAILURES', kind: 'int', default: '5', scope: 'sidecar', doc: 'Outbound lane: consecutive gateway failures (refused, reset, timeout, 502/503/504 other than a shed) that eject an instance.' },
  { env: 'DOORMAN_OUTLIER_EJECT_TIME', kind: 'duration', default: '30s', scope: 'sidecar', doc: "Outbound lane: how long an ejection lasts, times the instance's number of recent ejections (at most 10×)." },
  { env: 'DOORMAN_OUTBOUND_PANIC_THRESHOLD', kind: 'percent', default: '50', scope: 'sidecar', doc: "Outbound lane: panic mode (Envoy's `healthy_panic_threshold`). When fewer than this percent of a service's registered instances that are not draining are routable (`up`, `warming`, not ejected), requests are balanced over all of them — ejected and `starting` ones too — rather than over a few or none; `doorman_outbound_panic{service}` and a log line say so. 0 turns it off (ejected instances are still used when nothing else is left)." },
  { env: 'DOORMAN_OUTLIER_MAX_EJECT', kind: 'percent', default: '50', scope: 'sidecar', doc: "Outbound lane: protection threshold, most percent of a service's instances ejected at once (a service with one instance never loses it)." },
  // Warmup
  { env: 'DOORMAN_WARMUP', kind: 'duration', default: '60s', scope: 'sidecar', doc: "Slow-start window after registration: the weight doorman's consumers balance by ramps up over it (0 = off)." },
  { env: 'DOORMAN_WARMUP_AGGRESSION', kind: 'number', default: '1.0', scope: 'sidecar', doc: 'Warmup curve exponent (1 = linear).' },
  { env: 'DOORMAN_WARMUP_MIN_WEIGHT', kind: 'percent', default: '10', scope: 'sidecar', doc: 'Weight floor in percent during warmup.' },
  { env: 'DOORMAN_WARMUP_INBOUND', kind: 'enum', values: ['off', 'ramp'], default: 'off', scope: 'sidecar', doc: "`off`: warmup is the consumers' weight only, and the instance takes what it is sent up to its limit; `ramp`: its own limit also ramps with the weight, and what the ramp sheds says `x-doorman-shed: warmup`. Turn it on only when every caller balances by doorman's weights, or when the app truly can't take its share cold: a caller that doesn't (a Kubernetes Service, an ingress) sends a new instance its full share at once, and the ramp sheds the excess as 503s for the whole window ([warmup.md](warmup.md))." },
  // Drain
  { env: 'DOORMAN_DRAIN_DELAY', kind: 'duration', default: '5s', scope: 'sidecar', doc: 'After drain starts, keep serving (flagged) at least this long while endpoints propagate.' },
  { env: 'DOORMAN_DRAIN_QUIET', kind: 'duration', default: '1s', scope: 'sidecar', doc: '...and until no new request has arrived for this long (exit on quiet, not on a timer).' },
  { env: 'DOORMAN_DRAIN_TIMEOUT', kind: 'duration', default: '25s', scope: 'sidecar', doc: 'Longest wait for in-flight requests before closing.' },
  // Probes
  { env: 'DOORMAN_APP_PROBES', kind: 'json', default: '', scope: 'sidecar', annotatable: false, doc: "JSON of the app's original probes, written by the injector (`{\"/app-health/app/livez\":{\"httpGet\":{...}}}`). When set, the lane answers only the `/app-health/…` paths it holds (others are 404); when empty, every `/app-health/<c>/<probe>` falls back to a TCP connect to the app port (`readyz`, `startupz`) and the app's progress (`livez`) ([probes.md](probes.md))." },
  { env: 'DOORMAN_LIVENESS_STALL', kind: 'duration', default: '10s', scope: 'sidecar', doc: "`/livez` fails when doorman's main event loop has made no progress for this long." },
  { env: 'DOORMAN_READINESS_STALL', kind: 'duration', default: '1s', scope: 'sidecar', doc: "`/readyz` fails while doorman's main event loop has made no progress for this long." },
  { env: 'DOORMAN_APP_STALL', kind: 'duration', default: '10s', scope: 'sidecar', doc: '`/app-health/<c>/livez` fails when the app has work in flight and completes none for this long.' },
  { env: 'DOORMAN_LIVENESS_MAX_FAILING', kind: 'percent', default: '25', scope: 'sidecar', doc: "The restart budget across the service: the most percent (at least one instance) of a service's instances whose app liveness (`/app-health/<c>/livez`) may fail at once, failing or restarting ones counted, this one included. Beyond it the failure is shared (a dependency, not this pod) and the probe answers 200, saying why under `?verbose`. Needs a registry the instances share; with `memory` a stall alone never fails liveness ([probes.md](probes.md))." },
  { env: 'DOORMAN_LANE_NICE', kind: 'nice', default: '-10', scope: 'sidecar', doc: "Scheduling priority (a nice value, -20 to 19) the probe lane's thread asks for, so that when the pod's CPU is contended probes are answered before business work. Below 0 needs the `SYS_NICE` capability; without it the lane keeps doorman's priority and logs so once at start-up." },
  { env: 'DOORMAN_APP_CHECK_INTERVAL', kind: 'duration', default: '1s', scope: 'sidecar', doc: "How often the lane checks the app's startup and readiness before it has started, and its readiness afterwards when its readiness probe gives no `periodSeconds` (or there is none)." },
  // Admin
  { env: 'DOORMAN_ADMIN_TOKEN', kind: 'string', default: '', scope: 'all', secret: true, annotatable: false, doc: 'Bearer token for mutating admin calls from off-pod; loopback needs none.' },
  { env: 'DOORMAN_NODE_IP', kind: 'string', default: '', scope: 'sidecar', annotatable: false, doc: "The node's address (downward API `status.hostIP`, set by the injector): kubelet's preStop `httpGet` to `/drain` comes from it and is accepted without a token." },
  { env: 'DOORMAN_LOG_LEVEL', kind: 'level', default: 'info', scope: 'all', doc: 'pino log level: `fatal`, `error`, `warn`, `info`, `debug`, `trace` or `silent`.' },
  // Webhook
  // Observability: the access log, and tracing through OpenTelemetry's own variables (off unless an endpoint is set)
  { env: 'DOORMAN_ACCESS_LOG', kind: 'enum', values: ['off', 'json'], default: 'off', scope: 'sidecar', doc: '`json`: one pino line per request on stdout (both lanes: time, lane, method, path, status, duration, queue wait, shed reason, instance, request id, trace id); `off`: none ([observability.md](observability.md)).' },
  { env: 'DOORMAN_ACCESS_LOG_SAMPLE', kind: 'percent', default: '100', scope: 'sidecar', doc: 'Percent of requests the access log writes (a random sample).' },
  { env: 'OTEL_EXPORTER_OTLP_ENDPOINT', kind: 'string', default: '', scope: 'sidecar', annotatable: false, doc: 'OTLP/HTTP collector base URL (`http://otel-collector:4318`); spans go to `<url>/v1/traces`. Tracing is off unless this or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.' },
  { env: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', kind: 'string', default: '', scope: 'sidecar', annotatable: false, doc: 'The traces URL itself, used as given (overrides the base endpoint).' },
  { env: 'OTEL_EXPORTER_OTLP_PROTOCOL', kind: 'enum', values: ['http/protobuf', 'http/json'], default: 'http/protobuf', scope: 'sidecar', annotatable: false, doc: 'OTLP over HTTP, protobuf or JSON (`grpc` is not carried: use a collector\'s HTTP receiver, port 4318).' },
  { env: 'OTEL_SERVICE_NAME', kind: 'string', default: '', scope: 'sidecar', annotatable: false, doc: "The spans' `service.name`; defaults to `DOORMAN_SERVICE`, else `doorman`." },
  { env: 'OTEL_TRACES_SAMPLER', kind: 'enum', values: ['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'], default: 'parentbased_always_on', scope: 'sidecar', annotatable: false, doc: "Which requests are traced: the caller's sampling decision is followed (`parentbased_*`), and new traces are sampled always, never, or at `OTEL_TRACES_SAMPLER_ARG`." },
  { env: 'OTEL_TRACES_SAMPLER_ARG', kind: 'string', default: '1', scope: 'sidecar', annotatable: false, doc: 'The ratio for the `traceidratio` samplers, 0 to 1.' },
  { env: 'OTEL_RESOURCE_ATTRIBUTES', kind: 'string', default: '', scope: 'sidecar', annotatable: false, doc: 'Resource attributes of every span, `key=value,key=value` (percent-encoded values).' },
  { env: 'OTEL_SDK_DISABLED', kind: 'enum', values: ['true', 'false'], default: 'false', scope: 'sidecar', annotatable: false, doc: '`true` turns tracing off whatever the endpoint.' },
  { env: 'DOORMAN_WEBHOOK_PORT', kind: 'port', default: '8443', scope: 'webhook', annotatable: false, doc: '`doorman webhook`: HTTPS port.' },
  { env: 'DOORMAN_WEBHOOK_CERT', kind: 'path', default: '/etc/doorman/tls/tls.crt', scope: 'webhook', annotatable: false, doc: '`doorman webhook`: PEM certificate file (reloaded when it changes).' },
  { env: 'DOORMAN_WEBHOOK_KEY', kind: 'path', default: '/etc/doorman/tls/tls.key', scope: 'webhook', annotatable: false, doc: '`doorman webhook`: PEM key file (reloaded when it changes).' },
  { env: 'DOORMAN_SIDECAR_IMAGE', kind: 'string', default: '', scope: 'webhook', annotatable: false, doc: '`doorman webhook` and `doorman inject`: the sidecar image (empty = `doorman:<version of the injector>`).' },
  { env: 'DOORMAN_SIDECAR_MODE', kind: 'enum', values: ['native', 'container'], default: 'native', scope: 'webhook', annotatable: false, doc: '`doorman webhook` and `doorman inject`: `native` (an init container with `restartPolicy: Always`, Kubernetes 1.29+) or `container` (a plain container).' },
  { env: 'DOORMAN_SIDECAR_ENV', kind: 'settings', default: '', scope: 'webhook', annotatable: false, secret: true, doc: '`doorman webhook` and `doorman inject`: defaults for the sidecar settings of every injected pod, a JSON object such as `{"DOORMAN_REGISTRY":"redis://…","DOORMAN_MAX_CONCURRENCY":"200"}`. A pod\'s own annotation wins. Only settings a pod annotation may set, but not `DOORMAN_APP_PORT` or `DOORMAN_SERVICE`, which the injector reads from each pod; the values are checked as the sidecar checks them.' },
  { env: 'DOORMAN_SIDECAR_RESOURCES', kind: 'resources', default: JSON.stringify(SIDECAR_RESOURCES), scope: 'webhook', annotatable: false, doc: "`doorman webhook` and `doorman inject`: the injected sidecar's `resources` as JSON (`requests` and `limits` of `cpu` and `memory`); what it leaves out is not set. A pod's `doorman.io/sidecar-*` annotations change one value each." },
  // Checker
  { env: 'DOORMAN_CHECK_INTERVAL', kind: 'duration', default: '3s', scope: 'checker', annotatable: false, doc: '`doorman checker`: round period.' },
  { env: 'DOORMAN_CHECK_TIMEOUT', kind: 'duration', default: '1s', scope: 'checker', annotatable: false, doc: "`doorman checker`: one probe's timeout, at most `DOORMAN_CHECK_INTERVAL` (a longer one is cut to the interval)." },
  { env: 'DOORMAN_CHECK_FAILURES', kind: 'int', default: '3', scope: 'checker', annotatable: false, doc: '`doorman checker`: consecutive failures that eject an instance.' },
  { env: 'DOORMAN_CHECK_SUCCESSES', kind: 'int', default: '2', scope: 'checker', annotatable: false, doc: '`doorman checker`: consecutive successes that recover an instance.' },
  { env: 'DOORMAN_CHECK_MAX_EJECT', kind: 'percent', default: '33', scope: 'checker', annotatable: false, doc: "`doorman checker`: protection threshold, most percent of a service's cluster ejected at once." },
  { env: 'DOORMAN_CHECK_MODE', kind: 'enum', values: ['full', 'recover-only', 'off'], default: 'full', scope: 'checker', annotatable: false, doc: '`doorman checker`: `full`, `recover-only` (never ejects), `off`; the default under the run-time switch (`doorman checker mode`).' },
  { env: 'DOORMAN_CHECK_CONCURRENCY', kind: 'int', default: '200', scope: 'checker', annotatable: false, doc: '`doorman checker`: most probes in flight at once.' },
  { env: 'DOORMAN_CHECK_REPLICA_ID', kind: 'string', default: '', scope: 'checker', annotatable: false, doc: '`doorman checker`: this replica\'s name in the shard ring (default: host name and process id).' },
  { env: 'DOORMAN_CHECK_GROUP', kind: 'enum', values: ['main', 'canary'], default: 'main', scope: 'checker', annotatable: false, doc: '`doorman checker`: `main` checks every service but the canary ones; `canary` checks only the services in `DOORMAN_CHECK_CANARY`.' },
  { env: 'DOORMAN_CHECK_CANARY', kind: 'globs', default: '', scope: 'checker', annotatable: false, doc: '`doorman checker`: comma-separated service globs (`orders`, `pay-*`) or organisations (`org:finance`, `org:pay-*`) owned by the canary group; give both groups the same list.' },
  { env: 'DOORMAN_CHECK_EXCLUDE', kind: 'globs', default: '', scope: 'checker', annotatable: false, doc: '`doorman checker`: comma-separated service globs never checked.' },
  { env: 'DOORMAN_CHECK_TARGETS', kind: 'path', default: '', scope: 'checker', annotatable: false, doc: '`doorman checker`: a YAML file of targets outside the registry (machines, VMs, services without a sidecar; shape in docs/checker.md), watched and reloaded; the checker publishes their state into the registry (`source: static`). A bad file is refused and the last good one kept.' },
] satisfies Setting[])

/** Whether a pod may set a setting by annotation (and so the injector's DOORMAN_SIDECAR_ENV may default it). */
export function podSettable (s: Setting): boolean {
  return (s.scope === 'sidecar' || s.scope === 'all') && s.annotatable !== false
}

/** A Kubernetes resource quantity: 100m, 128Mi, 1, 1.5, 2e3. */
export const QUANTITY = /^(\d+(\.\d+)?|\.\d+)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei|e\d+)?$/

/** `DOORMAN_MAX_CONCURRENCY` → `doorman.io/max-concurrency`. */
export function annotationFor (env: string): string {
  return 'doorman.io/' + env.replace(/^DOORMAN_/, '').toLowerCase().replace(/_/g, '-')
}

/** `DOORMAN_MAX_CONCURRENCY` → `maxConcurrency`. */
export function keyFor (env: string): string {
  return env.replace(/^DOORMAN_/, '').toLowerCase().replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())
}
