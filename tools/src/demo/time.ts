// Waiting in the demo: sleeps and polls that end early (rejecting) when the demo is interrupted.

export class Interrupted extends Error {
  constructor () { super('interrupted') }
}

/** Resolves after `ms` (at once when ms <= 0); rejects with Interrupted when the signal aborts first. */
export async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted === true) throw new Interrupted()
  if (ms <= 0) return
  await new Promise<void>((resolve, reject) => {
    const onAbort = (): void => { clearTimeout(timer); reject(new Interrupted()) }
    const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** Polls `fn` every 50 ms until it holds; throws naming `what` after `timeoutMs`. */
export async function waitUntil (what: string, fn: () => boolean, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(50, signal)
  }
}
