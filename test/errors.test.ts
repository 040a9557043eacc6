// Every error code doorman can answer with is listed in code and documented (as fastify checks its own).
import t from 'tap'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import path from 'node:path'
import { ERROR_CODES, classifyUpstreamError, DoormanError } from '../src/core/errors.js'
import { ROOT } from './helpers/index.js'

function sources (dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f)
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : []
  })
}

t.test('every code used in src is listed and documented', async (t) => {
  const used = new Set<string>()
  for (const f of sources(path.join(ROOT, 'src'))) for (const m of readFileSync(f, 'utf8').matchAll(/DOORMAN_ERR_[A-Z_]+/g)) used.add(m[0])
  const doc = readFileSync(path.join(ROOT, 'docs', 'errors.md'), 'utf8')
  for (const code of used) {
    t.ok((ERROR_CODES as readonly string[]).includes(code), `${code} is in ERROR_CODES`)
    t.match(doc, `\`${code}\``, `${code} is documented`)
  }
  for (const code of ERROR_CODES) t.ok(used.has(code), `${code} is used`)
})

t.test('upstream errors map to statuses in one place', async (t) => {
  const cases: Array<[string, number, string]> = [
    ['ECONNREFUSED', 502, 'DOORMAN_ERR_UPSTREAM_CONNECT'],
    ['ECONNRESET', 502, 'DOORMAN_ERR_UPSTREAM_CONNECT'],
    ['UND_ERR_SOCKET', 502, 'DOORMAN_ERR_UPSTREAM_CONNECT'],
    ['UND_ERR_HEADERS_TIMEOUT', 504, 'DOORMAN_ERR_UPSTREAM_TIMEOUT'],
    ['UND_ERR_CONNECT_TIMEOUT', 504, 'DOORMAN_ERR_UPSTREAM_TIMEOUT'],
    ['HPE_INVALID_CONSTANT', 502, 'DOORMAN_ERR_UPSTREAM_PROTOCOL'],
    ['HPE_SOMETHING_NEW', 502, 'DOORMAN_ERR_UPSTREAM_PROTOCOL'],
    ['EWHATEVER', 502, 'DOORMAN_ERR_INTERNAL']
  ]
  for (const [code, status, mapped] of cases) {
    const e = classifyUpstreamError(Object.assign(new Error('x'), { code }))
    t.equal(e.status, status, code)
    t.equal(e.code, mapped, code)
  }
  const own = new DoormanError('DOORMAN_ERR_INTERNAL', 'x', 502)
  t.equal(classifyUpstreamError(own), own, 'doorman errors pass through')
})
