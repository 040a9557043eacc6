// What ships: the npm package and the image carry the sidecar, the checker, the injector and the webhook, and none
// of the demo or the docs generator (tools/, a workspace of its own). `doorman demo` runs the demo from a clone and,
// where the demo is not there (an installed package, the image), says how to get it.
import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { cpSync, readdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { CLI, ROOT, spawnNode } from './helpers/index.js'

const run = promisify(execFile)

t.test('npm pack: the sidecar, checker, injector and webhook, no demo', async (t) => {
  // --ignore-scripts: `prepare` has built dist/ already (npm test's pretest); pack lists what is there.
  const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, maxBuffer: 16 << 20 })
  const files = (JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>)[0].files.map((f) => f.path)
  for (const f of ['package.json', 'dist/cli.js', 'dist/main.js', 'dist/sidecar.js', 'dist/proxy/exchange.js', 'dist/checker/index.js', 'dist/inject/cli.js', 'dist/inject/webhook.js']) {
    t.ok(files.includes(f), `the package has ${f}`)
  }
  const foreign = files.filter((f) => /(^|\/)demo(\/|\.)|config-doc|(^|\/)doc\.js|^tools\/|^dist\/bench\/|^src\/|^test\//.test(f))
  // A checkout built before the demo moved out may still hold dist/demo/: `rm -rf dist && npm run build` clears it.
  t.same(foreign, [], 'no demo, docs generator, bench, source or test file in the package (stale dist/? rebuild it from scratch)')
  t.ok(files.every((f) => f === 'package.json' || f === 'README.md' || f.startsWith('dist/')), 'only dist/, package.json and the README')
})

t.test('the image builds the sidecar alone', async (t) => {
  const docker = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8')
  const copies = docker.split('\n').filter((l) => /^COPY\b/.test(l))
  t.ok(copies.length > 0, 'the Dockerfile copies files in')
  const sources = copies.flatMap((l) => l.split(/\s+/).slice(1, -1).filter((s) => !s.startsWith('--')))
  t.ok(sources.includes('src'), 'the sidecar\'s sources are copied in')
  t.same(sources.filter((s) => /^(tools|test|bench)(\/|$)|(^|\/)demo(\/|$)/.test(s)), [], 'nothing of tools/, the demo, tests or bench is')
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>, workspaces: string[] }
  // @grpc/grpc-js is in the image for `doorman checker`'s grpc check alone: loaded by it, lazily, and by nothing else.
  const loaders = readdirRecursive(path.join(ROOT, 'src')).filter((f) => f.endsWith('.ts')).flatMap((f) => {
    const text = readFileSync(f, 'utf8')
    const stat = /^import (?!type )[^\n]*from '@grpc\/grpc-js'/m.test(text)
    const lazy = /import\('@grpc\/grpc-js'\)/.test(text)
    return stat || lazy ? [{ file: path.relative(ROOT, f), stat }] : []
  })
  t.ok('@grpc/grpc-js' in pkg.dependencies, "the gRPC library is a dependency of the image for the checker's grpc check")
  t.same(loaders.filter((l) => l.stat || !l.file.startsWith('src/checker/')), [], 'only the checker loads it, and lazily: the sidecar never does')
  t.same(pkg.workspaces, ['tools'], 'the demo is a workspace of its own')
  const tools = JSON.parse(readFileSync(path.join(ROOT, 'tools', 'package.json'), 'utf8')) as { private: boolean, dependencies: Record<string, string> }
  t.equal(tools.private, true, 'never published')
  t.ok('@grpc/grpc-js' in tools.dependencies, 'the workspace owns what the demo loads')
  t.notOk(existsSync(path.join(ROOT, 'src', 'demo')), 'no demo in src/')
})

t.test('doorman demo from a clone runs the workspace', async (t) => {
  const c = spawnNode(t, [CLI, 'demo', '--help'])
  const { code } = await c.exited
  t.equal(code, 0, c.output())
  t.match(c.output(), /usage: doorman demo \[--short\]/)
})

t.test('doorman demo where the demo is not installed says what to do', async (t) => {
  // The package as installed: its dist/ and package.json, its dependencies, and no tools/ beside them.
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-pkg-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true, filter: (src) => !src.includes(`${path.sep}bench`) })
  cpSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'))
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir')
  const c = spawnNode(t, [path.join(dir, 'dist', 'cli.js'), 'demo'])
  const { code } = await c.exited
  t.equal(code, 1, 'exits 1')
  t.match(c.output(), /doorman demo: the demo is not installed here/)
  t.match(c.output(), /npm ci && npm run demo/, 'names the commands that run it')
  t.notMatch(c.output(), /at .*\(|Error:/, 'no stack trace')

  const v = spawnNode(t, [path.join(dir, 'dist', 'cli.js'), '--version'])
  t.equal((await v.exited).code, 0, 'the rest of the CLI works there')
})

function readdirRecursive (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? readdirRecursive(path.join(dir, e.name)) : [path.join(dir, e.name)])
}
