// The lane thread's own metrics, written in Prometheus' text format without prom-client: a histogram and a counter
// by probe, and gauges read when scraped. prom-client in this thread as well would cost about 3 MB of memory for these
// few metrics (docs/benchmarks.md); the main thread's metrics are prom-client's, and the lane's text follows the same
// layout (one family after another, a blank line between them).

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

function num (v: number): string {
  return Number.isNaN(v) ? 'NaN' : v === Infinity ? '+Inf' : v === -Infinity ? '-Inf' : String(v)
}

function label (v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}

function head (name: string, help: string, type: string): string {
  return `# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${name} ${type}\n`
}

interface Family { render: () => string }

export class ProbeLaneMetrics {
  readonly #families: Family[] = []

  /** A histogram by probe name. */
  histogram (name: string, help: string, buckets: readonly number[]): (probe: string, value: number) => void {
    const bounds = [...buckets].sort((a, b) => a - b)
    const series = new Map<string, { counts: number[], sum: number, count: number }>()
    this.#families.push({
      render: () => {
        let out = head(name, help, 'histogram')
        for (const [probe, s] of series) {
          const p = label(probe)
          let acc = 0
          for (let i = 0; i < bounds.length; i++) {
            acc += s.counts[i]
            out += `${name}_bucket{le="${num(bounds[i])}",probe="${p}"} ${acc}\n`
          }
          out += `${name}_bucket{le="+Inf",probe="${p}"} ${s.count}\n${name}_sum{probe="${p}"} ${num(s.sum)}\n${name}_count{probe="${p}"} ${s.count}\n`
        }
        return out
      }
    })
    return (probe, value) => {
      let s = series.get(probe)
      if (s === undefined) series.set(probe, s = { counts: bounds.map(() => 0), sum: 0, count: 0 })
      const i = bounds.findIndex((b) => value <= b)
      if (i !== -1) s.counts[i]++
      s.sum += value
      s.count++
    }
  }

  /** A counter by one label (the probe's name unless given). */
  counter (name: string, help: string, labelName = 'probe'): (probe: string) => void {
    const counts = new Map<string, number>()
    this.#families.push({
      render: () => {
        let out = head(name, help, 'counter')
        for (const [probe, n] of counts) out += `${name}{${labelName}="${label(probe)}"} ${n}\n`
        return out
      }
    })
    return (probe) => { counts.set(probe, (counts.get(probe) ?? 0) + 1) }
  }

  /** A gauge read when scraped, with fixed labels if given. */
  gauge (name: string, help: string, read: () => number, labels: Record<string, string> = {}): void {
    const l = Object.entries(labels).map(([k, v]) => `${k}="${label(v)}"`).join(',')
    const series = l === '' ? name : `${name}{${l}}`
    this.#families.push({ render: () => `${head(name, help, 'gauge')}${series} ${num(read())}\n` })
  }

  text (): string {
    return this.#families.map((f) => f.render()).join('\n')
  }
}
