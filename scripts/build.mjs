// The build: dist/ emptied first (tsc never removes the output of a source that moved or went away, such as the demo
// that used to be compiled to dist/demo/), the sidecar compiled to dist/, then tools/ (the demo and the docs
// generator, an npm workspace of their own) to tools/dist/: they import the sidecar's built modules and type
// declarations from dist/. Where tools/ is absent (the image's build stage copies only the sidecar's sources) it is
// skipped.
import { spawnSync } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')

function compile (project) {
  const r = spawnSync(process.execPath, [tsc, '-p', project], { stdio: 'inherit' })
  if (r.status !== 0) process.exit(r.status ?? 1)
}

rmSync(path.join(root, 'dist'), { recursive: true, force: true })
compile(path.join(root, 'tsconfig.json'))
const tools = path.join(root, 'tools', 'tsconfig.json')
if (existsSync(tools)) {
  rmSync(path.join(root, 'tools', 'dist'), { recursive: true, force: true })
  compile(tools)
}
