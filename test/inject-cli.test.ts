import t from 'tap'
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parseAllDocuments } from 'yaml'
import { CLI, spawnNode } from './helpers/index.js'
import { schemaErrors } from './helpers/k8s.js'
import { version } from '../src/core/version.js'

const UNRELATED = `# settings for the web app, kept exactly as written
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}   # flow style stays
data:
  GREETING:   "hello"
`
const SERVICE = `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - name: web
    port: 80
    targetPort: 8080   # by number: doorman must warn
`
const DEPLOYMENT = `# The web app, opted in
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # the name
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
      annotations:
        doorman.io/inject: "enabled"   # opt in
        doorman.io/max-concurrency: "40"
    spec:
      containers:
      # the app itself
      - name: web
        image: example/web:1
        ports:
        - name: http
          containerPort: 8080
        readinessProbe:
          httpGet:
            path: /ready
            port: http
`
const INPUT = DEPLOYMENT + '---\n' + UNRELATED + '---\n' + SERVICE + '---\njust a string\n'

async function run (t: Tap.Test, args: string[], stdin?: string, env: Record<string, string> = {}): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawnNode(t, [CLI, 'inject', ...args], env, { stdin: stdin ?? '' })
  let stdout = ''
  let stderr = ''
  child.proc.stdout?.on('data', (c: Buffer) => { stdout += c.toString() })
  child.proc.stderr?.on('data', (c: Buffer) => { stderr += c.toString() })
  const { code } = await child.exited
  return { code, stdout, stderr }
}

t.test('multi-document YAML in, YAML out: comments and unrelated documents kept', async (t) => {
  const r = await run(t, [], INPUT)
  t.equal(r.code, 0, r.stderr)
  const docs = parseAllDocuments(r.stdout)
  t.equal(Array.isArray(docs) ? docs.length : 0, 4, 'four documents out')
  const out = Array.isArray(docs) ? docs.map((d) => d.toJS() as Record<string, any>) : []
  const spec = out[0].spec.template.spec
  t.equal(spec.initContainers[0].name, 'doorman')
  t.equal(spec.initContainers[0].image, `doorman:${version}`)
  t.ok(spec.initContainers[0].env.some((e: any) => e.name === 'DOORMAN_MAX_CONCURRENCY' && e.value === '40'))
  for (const comment of ['# The web app, opted in', '# the name', '# opt in', '# the app itself']) t.ok(r.stdout.includes(comment), `keeps "${comment}"`)
  t.ok(r.stdout.includes(UNRELATED), 'the ConfigMap is written back byte for byte')
  t.ok(r.stdout.includes(SERVICE), 'the Service is written back byte for byte')
  t.ok(r.stdout.endsWith('---\njust a string\n'), 'a non-object document is kept')
  t.match(r.stdout, /\n {6}- name: web\n/, 'the list style of the input is kept')
  t.match(r.stderr, /warning: service\/web: port web targets the app of deployment\/web \/spec\/template by number \(8080\), so its traffic bypasses doorman; set targetPort: http/)
  for (const o of out.slice(0, 3)) t.same(await schemaErrors(o), [], `${String(o.kind)} validates`)

  const again = await run(t, [], r.stdout)
  t.equal(again.code, 0)
  t.equal(again.stdout, r.stdout, 'injecting the output again changes nothing')
})

t.test('input with nothing to inject comes back unchanged', async (t) => {
  const r = await run(t, [], UNRELATED + '---\n' + SERVICE)
  t.equal(r.code, 0)
  t.equal(r.stdout, UNRELATED + '---\n' + SERVICE)
  const empty = await run(t, [], '')
  t.equal(empty.code, 0)
  t.equal(empty.stdout, '')
})

t.test('-f FILE, --mode container and --image', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-inject-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = path.join(dir, 'app.yaml')
  writeFileSync(file, DEPLOYMENT)
  const r = await run(t, ['-f', file, '--mode', 'container', '--image', 'registry.example/doorman:9'])
  t.equal(r.code, 0, r.stderr)
  const o = parseAllDocuments(r.stdout)
  const d = (Array.isArray(o) ? o[0].toJS() : {}) as Record<string, any>
  const containers = d.spec.template.spec.containers
  t.same(containers.map((c: any) => c.name), ['web', 'doorman'])
  t.equal(containers[1].image, 'registry.example/doorman:9')
  t.same(await schemaErrors(d), [])
  const env = await run(t, ['--filename=' + file], undefined, { DOORMAN_SIDECAR_MODE: 'container', DOORMAN_SIDECAR_IMAGE: 'mirror/doorman:2' })
  t.match(env.stdout, /image: mirror\/doorman:2/, 'DOORMAN_SIDECAR_IMAGE')
  t.notMatch(env.stdout, /initContainers/, 'DOORMAN_SIDECAR_MODE=container')
  const defaults = await run(t, ['-f', file], undefined, { DOORMAN_SIDECAR_ENV: '{"DOORMAN_WARMUP":"15s"}', DOORMAN_SIDECAR_RESOURCES: '{"requests":{"cpu":"10m"}}' })
  const injected = (parseAllDocuments(defaults.stdout) as any)[0].toJS().spec.template.spec.initContainers[0]
  t.same(injected.env.find((e: any) => e.name === 'DOORMAN_WARMUP'), { name: 'DOORMAN_WARMUP', value: '15s' }, 'DOORMAN_SIDECAR_ENV')
  t.same(injected.resources, { requests: { cpu: '10m' } }, 'DOORMAN_SIDECAR_RESOURCES')
  const missing = await run(t, ['-f', path.join(dir, 'nope.yaml')])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /doorman inject: can't read .*nope\.yaml: ENOENT/)
})

t.test('malformed input: a clear message, nothing on stdout, non-zero exit', async (t) => {
  const broken = DEPLOYMENT + '---\nkind: ConfigMap\ndata: [a, b\nmore: stuff\n'
  const r = await run(t, [], broken)
  t.equal(r.code, 1)
  t.equal(r.stdout, '', 'nothing written')
  t.match(r.stderr, /^doorman inject: stdin: document 2: .*line \d+, column \d+/)
  const dup = await run(t, [], 'kind: Pod\nkind: Pod\n')
  t.equal(dup.code, 1)
  t.match(dup.stderr, /document 1: Map keys must be unique/)
  const bad = await run(t, [], DEPLOYMENT.replace('"40"', '"forty"'))
  t.equal(bad.code, 1)
  t.equal(bad.stdout, '')
  t.match(bad.stderr, /doorman inject: stdin: document 1: deployment\/web \/spec\/template: doorman\.io\/max-concurrency: got "forty"; expected a whole number of at least 1/)
  const usage = await run(t, ['--mode', 'sideways'], DEPLOYMENT)
  t.equal(usage.code, 1)
  t.match(usage.stderr, /--mode: got "sideways"; expected native or container/)
  const cfg = await run(t, [], DEPLOYMENT, { DOORMAN_SIDECAR_MODE: 'sideways' })
  t.equal(cfg.code, 78)
  t.match(cfg.stderr, /bad configuration: DOORMAN_SIDECAR_MODE/)
})
