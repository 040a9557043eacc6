// Messages between the main thread and the lane thread, and the data the lane starts with.
import type { Exemplar } from '../metrics/openmetrics.js'
import type { Config } from '../config/index.js'
import type { LanePriority } from './priority.js'

/** The settings the lane thread needs, taken from the one Config. */
export type LaneSettings = Pick<Config, 'adminPort' | 'bindHost' | 'appHost' | 'appPort' | 'appProbes' | 'livenessStall' | 'readinessStall' | 'appStall' | 'livenessMaxFailing' | 'appCheckInterval' | 'adminToken' | 'nodeIp' | 'laneNice'>

export interface LaneData {
  buffer: SharedArrayBuffer
  settings: LaneSettings
  /** Static facts shown in /state: service, instance id, ... */
  info: Record<string, unknown>
}

export type ToLane =
  | { type: 'metrics', id: number, text: string | null, exemplars?: Exemplar[] }
  | { type: 'close' }
  /** The app's own registry as the main thread sees it (shown in /state). */
  | { type: 'app-registry', status: Record<string, unknown> }

export type FromLane =
  | { type: 'listening', port: number, priority: LanePriority }
  | { type: 'error', message: string, code?: string }
  | { type: 'metrics', id: number }
  | { type: 'drain', source: string }
  /** The app's liveness verdict changed: failed (within the restart budget) or waived (answered 200 although failing). */
  | { type: 'liveness', verdict: 'ok' | 'failed' | 'waived', reason: string, failing: number, total: number, budget: number }
