// Summarises a V8 CPU profile (from `npm run bench -- --profile DIR`): self time by area (doorman's own modules,
// undici, node's http internals, streams, GC, …) and the heaviest functions.
// Usage: node dist/bench/profile.js FILE.cpuprofile [TOP]
import { readFileSync } from 'node:fs'

interface Node { id: number, callFrame: { functionName: string, url: string, lineNumber: number }, hitCount?: number, children?: number[] }
interface Profile { nodes: Node[], samples: number[], timeDeltas: number[], startTime: number, endTime: number }

/** The area a frame belongs to, by its script URL. */
function area (url: string, fn: string): string {
  if (url === '') return fn === '(garbage collector)' ? 'GC' : fn === '(idle)' ? 'idle' : fn === '(program)' ? 'native (program)' : `native ${fn}`
  const m = /\/(?:src|dist)\/([a-z-]+)\//.exec(url)
  if (url.includes('/node_modules/')) return url.replace(/.*\/node_modules\/((?:@[^/]+\/)?[^/]+).*/, '$1')
  if (m !== null && !url.startsWith('node:')) return `doorman ${m[1]}`
  if (url.startsWith('node:')) {
    const n = url.slice(5)
    if (n.startsWith('_http') || n === 'http') return 'node http'
    if (n.startsWith('internal/streams') || n === 'stream') return 'node streams'
    if (n === 'net' || n.startsWith('internal/stream_base') || n.startsWith('internal/net')) return 'node net'
    if (n.startsWith('internal/timers') || n === 'timers') return 'node timers'
    if (n.startsWith('internal/process') || n === 'events' || n.startsWith('internal/async_hooks')) return 'node events/ticks'
    return `node ${n.split('/').slice(0, 2).join('/')}`
  }
  return url.replace(/^file:\/\//, '')
}

const [file, topArg] = process.argv.slice(2)
if (file === undefined) { console.error('usage: node dist/bench/profile.js FILE.cpuprofile [TOP]'); process.exit(64) }
const p = JSON.parse(readFileSync(file, 'utf8')) as Profile
const byId = new Map(p.nodes.map((n) => [n.id, n]))
const label = (n: Node): string => `${n.callFrame.functionName === '' ? '(anonymous)' : n.callFrame.functionName} ${n.callFrame.url.replace(/^.*\/(node_modules\/|src\/|dist\/)/, '$1')}:${n.callFrame.lineNumber + 1}`
const self = new Map<number, number>()
for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0))
let total = 0
let idle = 0
const areas = new Map<string, number>()
const fns = new Map<string, number>()
for (const [id, us] of self) {
  const n = byId.get(id) as Node
  const a = area(n.callFrame.url, n.callFrame.functionName)
  if (a === 'idle') { idle += us; continue }
  total += us
  areas.set(a, (areas.get(a) ?? 0) + us)
  const f = label(n)
  fns.set(f, (fns.get(f) ?? 0) + us)
}
// Inclusive time: each sample counted once for every distinct function on its stack.
const parent = new Map<number, number>()
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
const inclusive = new Map<string, number>()
for (const [id, us] of self) {
  const seen = new Set<string>()
  for (let n: Node | undefined = byId.get(id); n !== undefined; n = byId.get(parent.get(n.id) ?? -1)) {
    if (n.callFrame.functionName === '(root)' || n.callFrame.functionName === '(idle)') continue
    const f = label(n)
    if (!seen.has(f)) { seen.add(f); inclusive.set(f, (inclusive.get(f) ?? 0) + us) }
  }
}
const pct = (us: number): string => `${(100 * us / total).toFixed(1).padStart(5)}%`
console.log(`busy ${(total / 1e6).toFixed(2)} s, idle ${(idle / 1e6).toFixed(2)} s (main thread)`)
console.log('\nself time by area:')
for (const [a, us] of [...areas].sort((x, y) => y[1] - x[1])) console.log(`  ${pct(us)}  ${a}`)
console.log('\nheaviest functions (self time):')
const top = Number(topArg ?? 40)
for (const [f, us] of [...fns].sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`  ${pct(us)}  ${f}`)
console.log('\nheaviest functions (inclusive time):')
for (const [f, us] of [...inclusive].sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`  ${pct(us)}  ${f}`)
