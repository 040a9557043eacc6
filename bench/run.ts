// `npm run bench`: runs the benchmark sections in order and prints their tables, then every target checked.
// Usage: npm run bench -- [--only proxy,lane,memory,grpc,h2soak] [--scenario fast/50,20ms/200] [--rounds N] [--duration S] [--warmup S] [--lane-seconds S] [--profile DIR] [--baseline REF]
import { parseArgs } from 'node:util'
import { mkdirSync } from 'node:fs'
import path from 'node:path'
import { proxySection } from './proxy.js'
import { laneSection } from './lane.js'
import { outboundSection } from './outbound.js'
import { adaptiveSection } from './adaptive.js'
import { checkerSection } from './checker.js'
import { checkerTargetsSection } from './checker-targets.js'
import { memorySection } from './memory.js'
import { registrySection } from './registry.js'
import { grpcSection } from './grpc.js'
import { h2SoakSection } from './h2-soak.js'
import { tracingSection } from './tracing.js'
import { mtlsSection } from './mtls.js'
import { fairnessSection } from './fairness.js'
import { abSection } from './ab.js'
import { machine, fmt, killAll } from './lib.js'
import type { Options, Section, Check } from './section.js'


/**
 * The sections, run in this order. A new benchmark (e.g. the adaptive limiter's) is a module exporting a Section,
 * added to this list; `--only NAME` runs it alone.
 */
const SECTIONS: Section[] = [
  proxySection,
  laneSection,
  memorySection,
  outboundSection,
  adaptiveSection,
  checkerSection,
  checkerTargetsSection,
  registrySection,
  grpcSection,
  h2SoakSection,
  tracingSection,
  mtlsSection,
  fairnessSection
]
/** Sections run only when named with --only (the A/B comparison builds another commit). */
const ON_REQUEST: Section[] = [abSection]

function list (s: string): string[] { return s.split(',').map((x) => x.trim()).filter((x) => x !== '') }

async function main (): Promise<number> {
  const { values } = parseArgs({
    options: {
      only: { type: 'string' },
      rounds: { type: 'string', default: '3' },
      duration: { type: 'string', default: '2' },
      warmup: { type: 'string', default: '1' },
      'lane-seconds': { type: 'string', default: '8' },
      scenario: { type: 'string' },
      profile: { type: 'string' },
      baseline: { type: 'string', default: 'HEAD' }
    }
  })
  const opts: Options = {
    rounds: Number(values.rounds),
    duration: Number(values.duration),
    warmup: Number(values.warmup),
    laneSeconds: Number(values['lane-seconds']),
    scenarios: values.scenario === undefined ? null : list(values.scenario),
    profileDir: values.profile === undefined ? null : path.resolve(values.profile),
    baseline: values.baseline
  }
  for (const [k, v] of Object.entries(opts)) {
    if (typeof v === 'number' && !(v > 0)) throw new Error(`--${k} must be a positive number`)
  }
  if (opts.profileDir !== null) mkdirSync(opts.profileDir, { recursive: true })
  const only = values.only === undefined ? undefined : list(values.only)
  const all = [...SECTIONS, ...ON_REQUEST]
  const unknown = only?.filter((n) => !all.some((s) => s.name === n)) ?? []
  if (unknown.length > 0) throw new Error(`unknown section ${unknown.join(', ')}; sections: ${all.map((s) => s.name).join(', ')}`)
  const sections = only === undefined ? SECTIONS : all.filter((s) => only.includes(s.name))

  console.log(`doorman bench — ${machine()}`)
  console.log(`reproduce: npm run bench -- ${process.argv.slice(2).join(' ')}`.trimEnd())
  const checks: Check[] = []
  for (const s of sections) {
    console.log(`\n## ${s.title}\n`)
    const started = performance.now()
    checks.push(...await s.run(opts))
    console.log(`\n(${s.name}: ${fmt((performance.now() - started) / 1000)} s)`)
  }
  console.log('\n## Targets\n')
  for (const c of checks) console.log(`${c.ok(c.value) ? 'PASS' : 'FAIL'}  ${c.what}: ${fmt(c.value, 2)}${c.unit !== undefined ? ` ${c.unit}` : ''}`)
  return 0
}

main().then((code) => { killAll(); process.exit(code) }, (err: unknown) => {
  console.error(err)
  killAll()
  process.exit(1)
})
