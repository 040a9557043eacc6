// `doorman drain`: asks the local sidecar's lane to drain, then waits until it has drained (the lane stops
// answering, or reports `closed`) or the drain's own deadline passes. For a preStop exec hook: exit 0 when drained.
import { loadConfig } from '../config/index.js'

async function phase (base: string, headers: Record<string, string>): Promise<string | null> {
  try {
    const res = await fetch(`${base}/state`, { headers, signal: AbortSignal.timeout(2000) })
    const body = await res.json() as { phase?: string }
    return body.phase ?? null
  } catch {
    return null
  }
}

export async function command (args: string[]): Promise<number> {
  const cfg = loadConfig()
  const portArg = args.indexOf('--port')
  const port = portArg !== -1 ? Number(args[portArg + 1]) : cfg.adminPort
  const base = `http://127.0.0.1:${port}`
  const headers: Record<string, string> = cfg.adminToken !== '' ? { authorization: `Bearer ${cfg.adminToken}` } : {}
  let res: Response
  try {
    res = await fetch(`${base}/drain`, { method: 'POST', headers, signal: AbortSignal.timeout(5000) })
  } catch (err) {
    process.stderr.write(`doorman drain: the sidecar's lane at ${base} did not answer (${(err as Error).message}); nothing to drain\n`)
    return 0
  }
  if (res.status !== 202) {
    process.stderr.write(`doorman drain: ${res.status} ${await res.text()}`)
    return 1
  }
  process.stderr.write('doorman drain: draining\n')
  const deadline = Date.now() + cfg.drainDelay + cfg.drainTimeout + 2000
  while (Date.now() < deadline) {
    const p = await phase(base, headers)
    if (p === null || p === 'closed') {
      process.stderr.write('doorman drain: drained\n')
      return 0
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  process.stderr.write('doorman drain: timed out waiting for the drain\n')
  return 1
}
