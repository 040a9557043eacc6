// One runtime everywhere (docs/runtime.md): the image, the pinned `node` devDependency that `npm test`, `npm run demo`
// and `npm run bench` run on, and `engines` name the same release line; undici's own engines fit it.
import t from 'tap'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string }, devDependencies: Record<string, string> }
const pinned = pkg.devDependencies.node

t.test('the Dockerfile builds and runs on the pinned node release', async (t) => {
  t.match(pinned, /^\d+\.\d+\.\d+$/, 'the node devDependency is an exact version')
  const froms = [...readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8').matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1])
  t.ok(froms.length >= 2, 'a build and a runtime stage')
  for (const f of froms) t.equal(f.replace(/ AS .*/i, ''), `node:${pinned}-bookworm-slim`, `${f} is the pinned release`)
})

t.test('engines names the pinned major, and the tests run on the pinned release', async (t) => {
  const major = pinned.split('.')[0]
  t.equal(pkg.engines.node, `>=${major}`)
  t.equal(process.version, `v${pinned}`, 'npm test runs on the node devDependency')
})

t.test('undici\'s engines accept the pinned release', async (t) => {
  const undici = JSON.parse(readFileSync(path.join(ROOT, 'node_modules/undici/package.json'), 'utf8')) as { version: string, engines: { node: string } }
  t.match(undici.version, /^8\./, 'undici 8')
  const min = /^>=(\d+)\.(\d+)\.(\d+)$/.exec(undici.engines.node)
  t.ok(min !== null, `undici's engines are a lower bound (${undici.engines.node})`)
  const [a, b, c] = pinned.split('.').map(Number)
  const [x, y, z] = (min as RegExpExecArray).slice(1).map(Number)
  t.ok(a > x || (a === x && (b > y || (b === y && c >= z))), `node ${pinned} satisfies ${undici.engines.node}`)
})
