// The arrows between doorman's modules: no import cycle anywhere in src/ (between files, or between modules such as
// config and inject), nothing the sidecar's data path loads reaches the checker or the injector, and nothing in src/
// imports the demo or the docs generator (tools/, a workspace of their own outside the package). The
// same checks run first on a small tree written here with a cycle and a forbidden arrow in it, so a check that
// stopped seeing them would fail too.
import t from 'tap'
import path from 'node:path'
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { ROOT } from './helpers/index.js'
import { importGraph, moduleGraph, cyclicGroups, forbiddenPaths } from './helpers/import-graph.js'

/** The sidecar's data path: what `doorman run` loads for every request and probe. */
const DATA_PATH = ['src/proxy', 'src/inbound', 'src/outbound', 'src/probe-lane', 'src/limiter', 'src/warmup', 'src/drain', 'src/sidecar.ts']
/** Programs of their own, in the same package, that the data path must never load. */
const OTHER_PROGRAMS = ['src/checker', 'src/inject']

const show = (chains: string[][]): string => chains.map((c) => c.join(' → ')).join('\n')

t.test('the checks see a cycle and a forbidden arrow in a tree made to have them', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-graph-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = (name: string, text: string): void => {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    writeFileSync(path.join(dir, name), text)
  }
  file('tsconfig.json', JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true }, include: ['src/**/*.ts'] }))
  file('src/a/one.ts', "import type { Two } from './two.js'\nexport interface One { two: Two }\n")
  file('src/a/two.ts', "import type { One } from './one.js'\nexport interface Two { one: One }\n")
  file('src/b/index.ts', "import { c } from '../c/index.js'\nexport const b = c\n")
  file('src/c/index.ts', "export const c = 1\nexport const load = async () => await import('../b/index.js')\n")
  file('src/proxy/core.ts', "import { helper } from '../shared/util.js'\nexport const core = helper\n")
  file('src/shared/util.ts', "import { budget } from '../checker/policy.js'\nexport const helper = budget\n")
  file('src/checker/policy.ts', 'export const budget = 1\n')
  file('src/cli.ts', "export const demo = async () => await import('../tools/demo.js')\n")
  file('tools/demo.ts', 'export const command = 1\n')

  const g = await importGraph(dir, 'src', path.join(dir, 'tsconfig.json'))
  t.same(g.cycles.map((c) => [...c].sort()).sort(), [['src/a/one.ts', 'src/a/two.ts'], ['src/b/index.ts', 'src/c/index.ts']],
    'a cycle through type-only imports, and one through a dynamic import, are cycles')
  t.same(cyclicGroups(moduleGraph(g, 'src')), [['src/b', 'src/c']], 'modules that import each other, one of them lazily')
  t.same(forbiddenPaths(g, 'src', ['src/proxy'], ['src/checker']),
    [['src/proxy/core.ts', 'src/shared/util.ts', 'src/checker/policy.ts']], 'an arrow through a module in between is found')
  t.same(g.outside, [['src/cli.ts', 'tools/demo.ts']], 'an arrow out of the tree is found')
})

t.test('src/', async (t) => {
  const g = await importGraph(ROOT, 'src', path.join(ROOT, 'tsconfig.json'))
  t.ok(g.files.size > 50 && g.files.has('src/proxy/exchange.ts') && (g.files.get('src/sidecar.ts')?.size ?? 0) > 5, 'the graph holds the sidecar')

  t.same(g.cycles, [], `no import cycle between files:\n${show(g.cycles)}`)
  const groups = cyclicGroups(moduleGraph(g, 'src'))
  t.same(groups, [], `no cycle between modules:\n${groups.map((m) => m.join(' ⇄ ')).join('\n')}`)
  const bad = forbiddenPaths(g, 'src', DATA_PATH, OTHER_PROGRAMS)
  t.same(bad, [], `the data path loads no checker or injector code:\n${show(bad)}`)
  t.same(g.outside, [], `src/ imports nothing of the repository outside it (tools/, test/, bench/):\n${show(g.outside)}`)
})
