// The registry an app registers itself in (Dubbo on ZooKeeper; Nacos and Eureka can follow as other modules): what
// doorman reads there (the app's own entries) and the one thing it writes (an instance disabled for its consumers).

/** One service the app has registered for this instance. */
export interface AppEntry {
  /** The service's name in that registry (Dubbo: the interface). */
  service: string
  /** The entry as the app wrote it (Dubbo: the provider URL, decoded). */
  url: string
  /** When the app says it registered, from its own entry (Dubbo: the URL's `timestamp`), in ms since the epoch; 0 unknown. */
  timestamp: number
  /** The app's own warmup window in ms (Dubbo: the URL's `warmup`); 0 when it gives none. */
  warmup: number
}

export interface AppRegistryStatus {
  kind: string
  /** The registry answered lately (connected). */
  up: boolean
  /** The app's entries for this instance's address, by service. */
  entries: AppEntry[]
  /** This instance has been disabled for the app's consumers (the drain). */
  disabled: boolean
}

export interface AppRegistry {
  readonly kind: string
  /** Starts watching the app's entries; `onChange` is called whenever they or the connection change. */
  start: (onChange: () => void) => void
  status: () => AppRegistryStatus
  /**
   * Takes this instance out of its consumers' choice (Dubbo: an override with `disabled=true` per service), for the
   * services registered now and any registered later. Resolves once written; retries while the registry is away.
   */
  disable: () => Promise<void>
  /**
   * Lets go. After a `disable`, waits first (at most `waitGoneMs`) for the app's own entries to leave the registry,
   * so its consumers never see it enabled again while it still exists; what doorman wrote goes with its session.
   */
  close: (waitGoneMs?: number) => Promise<void>
}
