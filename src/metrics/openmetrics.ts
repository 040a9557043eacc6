// The OpenMetrics exposition (application/openmetrics-text 1.0.0), made from the Prometheus text both threads write:
// counter families named without `_total` (their samples keep it), `untyped` as `unknown`, no blank or free comment
// lines, `# EOF` at the end, and trace-id exemplars on the request-duration histogram's buckets. Pure: the probe
// lane's thread runs it without loading prom-client.

export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8'

/** A trace id seen in a bucket of a histogram: the bucket's `le`, the observed value (seconds) and when (seconds). */
export interface Exemplar { metric: string, le: string, traceId: string, value: number, ts: number }

/** Whether a scrape's Accept header asks for OpenMetrics (Prometheus does when exemplar storage is on). */
export function wantsOpenMetrics (accept: string | undefined): boolean {
  return accept !== undefined && accept.includes('application/openmetrics-text')
}

export function toOpenMetrics (text: string, exemplars: readonly Exemplar[] = []): string {
  const byBucket = new Map<string, Exemplar>()
  for (const e of exemplars) byBucket.set(`${e.metric}_bucket{le="${e.le}"}`, e)
  const out: string[] = []
  /** Counter families (OpenMetrics name) whose samples must end in `_total`. */
  const counters = new Set<string>()
  let help: string | null = null
  for (const line of text.split('\n')) {
    if (line === '') continue
    if (line.startsWith('# HELP ')) { help = line; continue }
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ')
      let family = name
      let t = type
      if (type === 'counter') { family = name.replace(/_total$/, ''); counters.add(family) }
      if (type === 'untyped') t = 'unknown'
      if (help !== null && help.startsWith(`# HELP ${name} `)) out.push(`# HELP ${family} ${help.slice(8 + name.length)}`)
      help = null
      out.push(`# TYPE ${family} ${t}`)
      continue
    }
    if (line.startsWith('#')) continue
    help = null
    const brace = line.indexOf('{')
    const space = line.indexOf(' ')
    const nameEnd = brace >= 0 && brace < space ? brace : space
    const name = line.slice(0, nameEnd)
    if (counters.has(name)) { out.push(`${name}_total${line.slice(nameEnd)}`); continue }
    const e = byBucket.get(line.slice(0, line.lastIndexOf(' ')))
    out.push(e === undefined ? line : `${line} # {trace_id="${e.traceId}"} ${e.value} ${e.ts.toFixed(3)}`)
  }
  out.push('# EOF')
  return out.join('\n') + '\n'
}
