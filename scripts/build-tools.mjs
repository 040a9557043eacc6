// Builds tools/ (the demo and the docs generator, an npm workspace of their own) after the sidecar, whose built
// modules and type declarations in dist/ they import. Where tools/ is absent (the image's build stage copies only the
// sidecar's sources) there is nothing to build.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const project = path.join(root, 'tools', 'tsconfig.json')
if (existsSync(project)) {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
  const r = spawnSync(process.execPath, [tsc, '-p', project], { stdio: 'inherit' })
  process.exitCode = r.status ?? 1
}
