// Inline SVG charts for the report: time on x, a value on y, lines, steps or stacked bars, shaded bands for the
// scenario's phases, dashed reference lines (pool size, probe timeout) and event markers. No scripts, no fonts to
// fetch: the report stays one self-contained file.

export interface Series {
  name: string
  color: string
  /** [seconds, value]; null leaves a gap. */
  points: Array<[number, number | null]>
  kind?: 'line' | 'step' | 'dots'
  dashed?: boolean
}

export interface Stack {
  /** Bar width in seconds. */
  step: number
  layers: Array<{ name: string, color: string, values: Array<[number, number]> }>
}

export interface ChartSpec {
  id: string
  title: string
  unit?: string
  xMax: number
  /** Shared across the charts of one comparison, so both sides are read on the same scale (rounded up to a tick). */
  yMax: number
  series?: Series[]
  stack?: Stack
  bands?: Array<{ from: number, to: number, label: string, color: string, short?: string }>
  hlines?: Array<{ y: number, label: string, color: string }>
  markers?: Array<{ t: number, label: string, color: string, glyph?: string, bottom?: boolean }>
  width?: number
  height?: number
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

/** A tick step (1, 2, 5 × 10^n, whole numbers when max is small) giving at most `count` ticks up to max. */
export function niceTicks (max: number, count = 4): { step: number, top: number } {
  const raw = max > 0 ? max / count : 1
  const p = 10 ** Math.floor(Math.log10(raw))
  let step = 10 * p
  for (const m of [1, 2, 5, 10]) { if (m * p >= raw) { step = m * p; break } }
  if (max <= count * 2) step = Math.max(1, Math.round(step))
  return { step, top: Math.ceil(max / step - 1e-9) * step }
}

function fmt (v: number): string {
  if (v >= 1000 && v % 1000 === 0) return `${v / 1000}k`
  return Number.isInteger(v) ? String(v) : v.toFixed(1)
}

export function chart (c: ChartSpec): string {
  const W = c.width ?? 520
  const H = c.height ?? 190
  const m = { l: 44, r: 12, t: 26, b: 30 }
  const pw = W - m.l - m.r
  const ph = H - m.t - m.b
  const ticks = niceTicks(c.yMax > 0 ? c.yMax : 1)
  const yMax = ticks.top
  const x = (t: number): number => m.l + (Math.max(0, Math.min(c.xMax, t)) / c.xMax) * pw
  const y = (v: number): number => m.t + ph - (Math.max(0, Math.min(yMax, v)) / yMax) * ph
  const out: string[] = []
  out.push(`<svg class="chart" id="${esc(c.id)}" data-title="${esc(c.title)}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(c.title)}" xmlns="http://www.w3.org/2000/svg">`)
  out.push(`<text x="${m.l}" y="15" class="ct">${esc(c.title)}${c.unit !== undefined ? ` <tspan class="cu">(${esc(c.unit)})</tspan>` : ''}</text>`)
  for (const b of c.bands ?? []) {
    const bx = x(b.from)
    const bw = x(b.to) - bx
    out.push(`<rect class="band" x="${bx.toFixed(1)}" y="${m.t}" width="${bw.toFixed(1)}" height="${ph}" fill="${b.color}"><title>${esc(b.label)}</title></rect>`)
    if (b.short !== undefined && bw > b.short.length * 5.2) out.push(`<text x="${(bx + bw / 2).toFixed(1)}" y="${m.t + ph - 4}" class="bl" text-anchor="middle">${esc(b.short)}</text>`)
  }
  // Grid and axes.
  for (let v = 0; v <= yMax + 1e-9; v += ticks.step) {
    const yy = y(v).toFixed(1)
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${yy}" y2="${yy}" class="grid"/><text x="${m.l - 5}" y="${(Number(yy) + 3.5).toFixed(1)}" class="ax" text-anchor="end">${fmt(v)}</text>`)
  }
  const xStep = c.xMax > 40 ? 10 : 5
  for (let t = 0; t <= c.xMax + 1e-9; t += xStep) {
    out.push(`<text x="${x(t).toFixed(1)}" y="${m.t + ph + 14}" class="ax" text-anchor="middle">${t}s</text>`)
  }
  out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${m.t + ph}" y2="${m.t + ph}" class="axis"/>`)
  if (c.stack !== undefined) {
    const { step, layers } = c.stack
    const base = new Map<number, number>()
    const bw = Math.max(1, (step / c.xMax) * pw - 1)
    for (const layer of layers) {
      const rects: string[] = []
      for (const [t, v] of layer.values) {
        if (v <= 0) continue
        const b0 = base.get(t) ?? 0
        base.set(t, b0 + v)
        const top = y(b0 + v)
        rects.push(`<rect x="${(x(t - step)).toFixed(1)}" y="${top.toFixed(1)}" width="${bw.toFixed(1)}" height="${(y(b0) - top).toFixed(1)}"/>`)
      }
      out.push(`<g class="layer" data-series="${esc(layer.name)}" fill="${layer.color}">${rects.join('')}</g>`)
    }
  }
  for (const s of c.series ?? []) {
    const segs: string[] = []
    let cur = ''
    let prev: [number, number] | null = null
    for (const [t, v] of s.points) {
      if (v === null) { if (cur !== '') segs.push(cur); cur = ''; prev = null; continue }
      const px = x(t).toFixed(1)
      const py = y(v).toFixed(1)
      if (cur === '') cur = `M${px} ${py}`
      else if (s.kind === 'step' && prev !== null) cur += `H${px}V${py}`
      else cur += `L${px} ${py}`
      prev = [t, v]
    }
    if (cur !== '') segs.push(cur)
    if (s.kind === 'dots') {
      const dots = s.points.filter((p): p is [number, number] => p[1] !== null).map(([t, v]) => `<circle cx="${x(t).toFixed(1)}" cy="${y(v).toFixed(1)}" r="2.2"/>`)
      out.push(`<g class="series" data-series="${esc(s.name)}" fill="${s.color}">${dots.join('')}</g>`)
    } else {
      out.push(`<path class="series" data-series="${esc(s.name)}" d="${segs.join('')}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed === true ? ' stroke-dasharray="5 3"' : ''} stroke-linejoin="round"/>`)
    }
  }
  for (const h of c.hlines ?? []) {
    const yy = y(h.y).toFixed(1)
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${yy}" y2="${yy}" stroke="${h.color}" stroke-dasharray="6 4" stroke-width="1.3"/><text x="${m.l + pw - 2}" y="${(Number(yy) - 4).toFixed(1)}" class="hl" text-anchor="end" fill="${h.color}">${esc(h.label)}</text>`)
  }
  for (const mk of c.markers ?? []) {
    const xx = x(mk.t).toFixed(1)
    out.push(`<g class="marker"><line x1="${xx}" x2="${xx}" y1="${m.t}" y2="${m.t + ph}" stroke="${mk.color}" stroke-width="1.5" stroke-dasharray="2 2"/><text x="${xx}" y="${mk.bottom === true ? m.t + ph - 3 : m.t + 8}" class="mk" fill="${mk.color}" text-anchor="middle">${esc(mk.glyph ?? '↻')}</text><title>${esc(mk.label)}</title></g>`)
  }
  // Legend.
  const names = [...(c.stack?.layers.map((l) => [l.name, l.color]) ?? []), ...(c.series ?? []).map((s) => [s.name, s.color])]
  let lx = W - m.r
  const legend: string[] = []
  for (const [name, color] of names.reverse()) {
    const w = 14 + (name as string).length * 6.2
    lx -= w
    legend.push(`<rect x="${lx.toFixed(1)}" y="7" width="9" height="9" fill="${color}"/><text x="${(lx + 12).toFixed(1)}" y="15" class="lg">${esc(name as string)}</text>`)
  }
  out.push(legend.join(''))
  out.push('</svg>')
  return out.join('')
}

/** The chart styles, once per page. */
export const CHART_CSS = `svg.chart{background:#fff;border:1px solid #d8dee4;border-radius:6px;max-width:100%;height:auto}
svg.chart .ct{font:600 12px system-ui,sans-serif;fill:#1f2328}svg.chart .cu{font-weight:400;fill:#59636e}
svg.chart .ax,svg.chart .lg,svg.chart .hl{font:10px system-ui,sans-serif;fill:#59636e}svg.chart .mk{font:11px system-ui,sans-serif}
svg.chart .bl{font:9px system-ui,sans-serif;fill:#8c959f}
svg.chart .grid{stroke:#eef1f4}svg.chart .axis{stroke:#8c959f}`
