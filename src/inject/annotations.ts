// Pod annotations the injector reads. Every sidecar setting in the settings table maps to `doorman.io/<kebab-name>`
// (annotationFor); this file adds the few annotations that steer the injector itself and are not settings.
import { SETTINGS, SIDECAR_RESOURCES, annotationFor, podSettable, type Setting } from '../config/table.js'

export const PREFIX = 'doorman.io/'

/** Annotations of the injector itself (not environment variables of the sidecar). */
export const INJECT = 'doorman.io/inject'
export const STATUS = 'doorman.io/status'
export const SIDECAR_CPU = 'doorman.io/sidecar-cpu'
export const SIDECAR_MEMORY = 'doorman.io/sidecar-memory'
export const SIDECAR_CPU_LIMIT = 'doorman.io/sidecar-cpu-limit'
export const SIDECAR_MEMORY_LIMIT = 'doorman.io/sidecar-memory-limit'

export interface InjectorAnnotation {
  readonly name: string
  readonly default: string
  readonly doc: string
}

/** The injector's own annotations, for the docs and for telling a typo from a known name. */
export const INJECTOR_ANNOTATIONS: readonly InjectorAnnotation[] = Object.freeze([
  { name: INJECT, default: 'none', doc: '`enabled` injects the sidecar into this pod template, `disabled` never does (it wins over a namespace labelled `doorman.io/inject=enabled`).' },
  { name: STATUS, default: 'set by the injector', doc: 'Written by the injector: JSON with the doorman version and mode. A pod that has it (or a `doorman` container) is never injected again.' },
  { name: SIDECAR_CPU, default: SIDECAR_RESOURCES.requests.cpu, doc: "The sidecar's CPU request; the injector's default from `DOORMAN_SIDECAR_RESOURCES`." },
  { name: SIDECAR_MEMORY, default: SIDECAR_RESOURCES.requests.memory, doc: "The sidecar's memory request; the injector's default from `DOORMAN_SIDECAR_RESOURCES`." },
  { name: SIDECAR_CPU_LIMIT, default: 'none', doc: "The sidecar's CPU limit (none by default: throttling the proxy adds latency to every request); the injector's default from `DOORMAN_SIDECAR_RESOURCES`." },
  { name: SIDECAR_MEMORY_LIMIT, default: SIDECAR_RESOURCES.limits.memory, doc: "The sidecar's memory limit; the injector's default from `DOORMAN_SIDECAR_RESOURCES`." }
])

/** Settings of the sidecar that a pod annotation may set: scope `sidecar` or `all`, not marked otherwise. */
export function annotatableSettings (): Setting[] {
  return SETTINGS.filter(podSettable)
}

export interface AnnotationReading {
  /** DOORMAN_* → value, for every annotatable setting the pod sets. */
  env: Map<string, string>
  warnings: string[]
}

/**
 * Reads the sidecar settings out of a pod template's annotations. Annotations that are not settings of the sidecar,
 * or that the injector sets itself, are reported (a typo must not pass silently) and ignored.
 */
export function readAnnotations (annotations: Readonly<Record<string, unknown>>): AnnotationReading {
  const env = new Map<string, string>()
  const warnings: string[] = []
  const byAnnotation = new Map(SETTINGS.map((s) => [annotationFor(s.env), s]))
  const own = new Set(INJECTOR_ANNOTATIONS.map((a) => a.name))
  for (const [name, raw] of Object.entries(annotations)) {
    if (!name.startsWith(PREFIX) || own.has(name)) continue
    const s = byAnnotation.get(name)
    if (s === undefined) {
      const near = nearest(name, [...byAnnotation.keys(), ...own])
      warnings.push(`unknown annotation ${name}${near !== null ? ` (did you mean ${near}?)` : ''}; ignored`)
      continue
    }
    if (s.annotatable === false) {
      warnings.push(`${name} can't be set by annotation (${s.scope === 'sidecar' || s.scope === 'all' ? 'the injector sets ' + s.env + ' itself' : s.env + ' is a setting of doorman ' + s.scope}); ignored`)
      continue
    }
    if (s.scope !== 'sidecar' && s.scope !== 'all') {
      warnings.push(`${name} is a setting of doorman ${s.scope}, not of the sidecar; ignored`)
      continue
    }
    env.set(s.env, typeof raw === 'string' ? raw : String(raw))
  }
  return { env, warnings }
}

/** The known name closest to a typo, if it is close enough to be the one meant. */
function nearest (name: string, known: string[]): string | null {
  let best: string | null = null
  let bestD = Infinity
  for (const k of known) {
    const d = distance(name, k)
    if (d < bestD) { bestD = d; best = k }
  }
  return bestD <= 3 ? best : null
}

function distance (a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = cur
  }
  return prev[b.length]
}
