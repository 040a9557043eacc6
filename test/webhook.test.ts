import t from 'tap'
import https from 'node:https'
import tls from 'node:tls'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, readFileSync, writeFileSync, renameSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { CLI, spawnNode, freePort, waitFor, request } from './helpers/index.js'
import { schemaErrors } from './helpers/k8s.js'
import { applyPatch, type Operation } from '../src/inject/patch.js'

type Any = Record<string, any>

/** A self-signed certificate for 127.0.0.1, made with the openssl CLI. */
function certificate (dir: string, name: string): { cert: string, key: string, fingerprint: string } {
  const cert = path.join(dir, `${name}.crt`)
  const key = path.join(dir, `${name}.key`)
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '1', '-subj', `/CN=doorman-webhook-${name}`, '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' })
  return { cert, key, fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 }
}

async function post (port: number, ca: Buffer, urlPath: string, body: string, method = 'POST'): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path: urlPath, method, ca, agent: false, headers: { 'content-type': 'application/json' }, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }) })
    })
    req.on('timeout', () => { req.destroy(new Error('timed out')) })
    req.on('error', reject)
    req.end(body)
  })
}

async function peerFingerprint (port: number): Promise<string> {
  return await new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const fp = s.getPeerCertificate().fingerprint256
      s.end()
      resolve(fp)
    })
    s.on('error', reject)
  })
}

function pod (annotations: Record<string, string> = { 'doorman.io/inject': 'enabled' }): Any {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { generateName: 'web-7d9f-', labels: { app: 'web' }, annotations },
    spec: { containers: [{ name: 'web', image: 'example/web:1', ports: [{ name: 'http', containerPort: 8080 }], readinessProbe: { httpGet: { path: '/ready', port: 'http' } } }] }
  }
}

let uidCount = 0
function admissionReview (object: Any, extra: Any = {}): Any {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: `0b0e0c4e-${++uidCount}`,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      namespace: 'shop',
      operation: 'CREATE',
      userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
      object,
      oldObject: null,
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
      ...extra
    }
  }
}

t.test('doorman webhook over real HTTPS', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-webhook-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const first = certificate(dir, 'first')
  const live = { cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key') }
  writeFileSync(live.cert, readFileSync(first.cert))
  writeFileSync(live.key, readFileSync(first.key))
  const ca = readFileSync(first.cert)
  const port = await freePort()
  const admin = await freePort()
  const child = spawnNode(t, [CLI, 'webhook'], {
    DOORMAN_WEBHOOK_PORT: String(port),
    DOORMAN_WEBHOOK_CERT: live.cert,
    DOORMAN_WEBHOOK_KEY: live.key,
    DOORMAN_ADMIN_PORT: String(admin),
    DOORMAN_BIND_HOST: '127.0.0.1',
    DOORMAN_SIDECAR_IMAGE: 'registry.example/doorman:test',
    DOORMAN_SIDECAR_ENV: '{"DOORMAN_WARMUP":"30s","DOORMAN_MAX_CONCURRENCY":"40"}',
    DOORMAN_SIDECAR_RESOURCES: '{"requests":{"cpu":"20m","memory":"48Mi"},"limits":{"memory":"160Mi"}}',
    DOORMAN_DRAIN_DELAY: '2s',
    DOORMAN_LOG_LEVEL: 'warn'
  })
  let exited = false
  void child.exited.then(() => { exited = true })
  await waitFor('webhook /readyz', async () => {
    if (exited) throw new Error(`webhook exited: ${child.output()}`)
    return (await request(admin, { path: '/readyz', timeout: 1000 })).status === 200
  }, 15_000)

  const send = async (review: Any, urlPath = '/mutate'): Promise<Any> => {
    const r = await post(port, ca, urlPath, JSON.stringify(review))
    t.equal(r.status, 200, `${urlPath}: 200`)
    const body = JSON.parse(r.body) as Any
    t.equal(body.apiVersion, 'admission.k8s.io/v1')
    t.equal(body.kind, 'AdmissionReview')
    t.equal(body.response.uid, review.request.uid, 'the same uid')
    return body.response
  }
  const patched = (input: Any, response: Any): Any => {
    t.equal(response.patchType, 'JSONPatch')
    const ops = JSON.parse(Buffer.from(response.patch as string, 'base64').toString()) as Operation[]
    t.ok(Array.isArray(ops) && ops.length > 0, 'a JSON patch')
    return applyPatch(input, ops)
  }

  await t.test('a pod that opts in gets the sidecar', async (t) => {
    const input = pod()
    const response = await send(admissionReview(input))
    t.equal(response.allowed, true)
    const out = patched(input, response)
    const sidecar = out.spec.initContainers[0]
    t.equal(sidecar.name, 'doorman')
    t.equal(sidecar.image, 'registry.example/doorman:test', 'DOORMAN_SIDECAR_IMAGE')
    const env = Object.fromEntries((sidecar.env as Any[]).map((e) => [e.name, e.value]))
    t.equal(env.DOORMAN_WARMUP, '30s', 'DOORMAN_SIDECAR_ENV')
    t.equal(env.DOORMAN_MAX_CONCURRENCY, '40')
    t.same(sidecar.resources, { requests: { cpu: '20m', memory: '48Mi' }, limits: { memory: '160Mi' } }, 'DOORMAN_SIDECAR_RESOURCES')
    const own = patched(pod({ 'doorman.io/inject': 'enabled', 'doorman.io/max-concurrency': '8' }), await send(admissionReview(pod({ 'doorman.io/inject': 'enabled', 'doorman.io/max-concurrency': '8' }))))
    t.equal(own.spec.initContainers[0].env.find((e: Any) => e.name === 'DOORMAN_MAX_CONCURRENCY').value, '8', 'the pod\'s annotation wins')
    t.equal(sidecar.restartPolicy, 'Always')
    const token = sidecar.env.find((e: Any) => e.name === 'DOORMAN_ADMIN_TOKEN')?.value as string
    t.match(token, /^[A-Za-z0-9_-]{24}$/, 'a fresh token for the pod')
    t.same(out.spec.containers[0].lifecycle.preStop.httpGet.httpHeaders, [{ name: 'Authorization', value: `Bearer ${token}` }], 'which the preStop hook sends')
    t.same(await schemaErrors(out), [], 'the patched pod validates')
    const other = patched(pod(), await send(admissionReview(pod())))
    t.not(other.spec.initContainers[0].env.find((e: Any) => e.name === 'DOORMAN_ADMIN_TOKEN').value, token, 'each pod its own token')
    const again = await send(admissionReview(out))
    t.equal(again.allowed, true)
    t.equal(again.patch, undefined, 'an injected pod is skipped')
  })

  await t.test('a dry-run review is answered the same way, and counted apart', async (t) => {
    const input = pod()
    const response = await send(admissionReview(input, { dryRun: true }))
    t.equal(response.allowed, true)
    t.equal(patched(input, response).spec.initContainers[0].name, 'doorman')
    const metrics = (await request(admin, { path: '/metrics' })).body
    t.match(metrics, /doorman_webhook_reviews_total\{outcome="injected",dry_run="true"\} 1\b/)
    t.match(metrics, /doorman_webhook_reviews_total\{outcome="injected",dry_run="false"\} 3\b/)
    t.match(metrics, /doorman_webhook_certificate_expiry_timestamp_seconds \d+/)
  })

  await t.test('what is not the webhook\'s to inject passes untouched', async (t) => {
    const plain = await send(admissionReview(pod({})))
    t.same(plain, { uid: plain.uid, allowed: true }, 'no annotation: allowed, no patch')
    const nsEnabled = await send(admissionReview(pod({})), '/mutate/namespace')
    t.equal(nsEnabled.patchType, 'JSONPatch', 'a namespace that opted in: injected')
    const optedOut = await send(admissionReview(pod({ 'doorman.io/inject': 'disabled' })), '/mutate/namespace')
    t.equal(optedOut.patch, undefined, 'disabled wins over the namespace')
    const system = await send(admissionReview(pod(), { namespace: 'kube-system' }))
    t.equal(system.patch, undefined, 'system namespaces are skipped')
    const update = await send(admissionReview(pod(), { operation: 'UPDATE' }))
    t.equal(update.patch, undefined, 'only CREATE is mutated')
    const typo = await send(admissionReview(pod({ 'doorman.io/inject': 'enabled', 'doorman.io/max-concurency': '5' })))
    t.match(typo.warnings, [/unknown annotation doorman\.io\/max-concurency \(did you mean doorman\.io\/max-concurrency\?\)/], 'warnings reach kubectl')
    const bad = await send(admissionReview(pod({ 'doorman.io/inject': 'enabled', 'doorman.io/max-concurrency': 'lots' })))
    t.equal(bad.allowed, false, 'a bad setting is refused at admission, as `doorman run` would refuse it')
    t.match(bad.status.message, /^doorman: pod\/web-7d9f-\*: doorman\.io\/max-concurrency: got "lots"; expected a whole number/)
  })

  await t.test('a malformed review gets a 400, never a crash', async (t) => {
    const cases: Array<[string, RegExp]> = [
      ['{"apiVersion":', /bad JSON/],
      ['[]', /not a JSON object/],
      [JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: { uid: 'x' } }), /got apiVersion "admission\.k8s\.io\/v1beta1"/],
      [JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }), /no request/],
      [JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { kind: { kind: 'Pod' } } }), /request\.uid is missing/],
      [JSON.stringify(admissionReview('not a pod')), /request\.object is not a pod/],
      ['\u0000\u00ff garbage', /bad JSON/]
    ]
    for (const [body, message] of cases) {
      const r = await post(port, ca, '/mutate', body)
      t.equal(r.status, 400, `400 for ${body.slice(0, 40)}`)
      t.match(JSON.parse(r.body).error, message)
    }
    t.equal((await post(port, ca, '/mutate', '', 'GET')).status, 405)
    t.equal((await post(port, ca, '/elsewhere', '{}')).status, 404)
    t.equal((await request(admin, { path: '/livez' })).status, 200, 'still alive')
    t.equal((await send(admissionReview(pod()))).allowed, true, 'and still answering')
    t.match((await request(admin, { path: '/metrics' })).body, /doorman_webhook_reviews_total\{outcome="invalid",dry_run="false"\} 7\b/)
  })

  await t.test('a new certificate is picked up when its files change', async (t) => {
    t.equal(await peerFingerprint(port), first.fingerprint)
    const second = certificate(dir, 'second')
    // Replaced as a Secret volume update does: whole files, moved into place.
    writeFileSync(live.key + '.new', readFileSync(second.key))
    writeFileSync(live.cert + '.new', readFileSync(second.cert))
    renameSync(live.key + '.new', live.key)
    renameSync(live.cert + '.new', live.cert)
    await waitFor('the second certificate served', async () => await peerFingerprint(port) === second.fingerprint, 15_000)
    const r = await post(port, readFileSync(second.cert), '/mutate', JSON.stringify(admissionReview(pod())))
    t.equal(r.status, 200, 'reviews go on over the new certificate')
  })

  await t.test('SIGTERM: not ready at once, still answering during the delay, then a clean exit', async (t) => {
    child.kill('SIGTERM')
    await waitFor('/readyz 503', async () => (await request(admin, { path: '/readyz', timeout: 1000 })).status === 503, 5000)
    const r = await post(port, readFileSync(path.join(dir, 'second.crt')), '/mutate', JSON.stringify(admissionReview(pod())))
    t.equal(r.status, 200, 'reviews are still answered while endpoints propagate')
    const { code } = await child.exited
    t.equal(code, 0)
  })
})

t.test('bad sidecar defaults stop the webhook with exit 78, naming the variable', async (t) => {
  const child = spawnNode(t, [CLI, 'webhook'], { DOORMAN_SIDECAR_ENV: '{"DOORMAN_MAX_CONCURRENCY":"lots"}', DOORMAN_WEBHOOK_PORT: String(await freePort()), DOORMAN_ADMIN_PORT: String(await freePort()) })
  const { code } = await child.exited
  t.equal(code, 78)
  t.match(child.output(), /bad configuration: DOORMAN_SIDECAR_ENV: DOORMAN_MAX_CONCURRENCY: got "lots"; expected a whole number/)
})

t.test('a certificate that can\'t be read is a configuration error', async (t) => {
  const child = spawnNode(t, [CLI, 'webhook'], { DOORMAN_WEBHOOK_CERT: '/nonexistent/tls.crt', DOORMAN_WEBHOOK_PORT: String(await freePort()), DOORMAN_ADMIN_PORT: String(await freePort()) })
  const { code } = await child.exited
  t.equal(code, 78)
  t.match(child.output(), /bad configuration: DOORMAN_WEBHOOK_CERT: can't read "\/nonexistent\/tls\.crt" \(ENOENT\); expected a PEM certificate file/)
})
