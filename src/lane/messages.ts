// Messages between the main thread and the lane thread, and the data the lane starts with.
import type { AppProbe } from '../config/index.js'

export interface LaneSettings {
  adminPort: number
  bindHost: string
  appHost: string
  appPort: number
  appProbes: Readonly<Record<string, AppProbe>>
  livenessStall: number
  readinessStall: number
  appStall: number
  appCheckInterval: number
  adminToken: string
  nodeIp: string
}

export interface LaneData {
  buffer: SharedArrayBuffer
  settings: LaneSettings
  /** Static facts shown in /state: service, instance id, ... */
  info: Record<string, unknown>
}

export type ToLane =
  | { type: 'metrics', id: number, text: string | null }
  | { type: 'close' }

export type FromLane =
  | { type: 'listening', port: number }
  | { type: 'error', message: string, code?: string }
  | { type: 'metrics', id: number }
  | { type: 'drain', source: string }
