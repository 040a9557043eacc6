#!/usr/bin/env node
// The entry point: picks a command, runs it, and is the only place that exits the process.
import { ConfigError } from './core/errors.js'

/** Each command's module exports `command(args)`, resolving to the exit code (or never, for servers). */
export type Command = (args: string[]) => Promise<number>

const COMMANDS: Record<string, () => Promise<{ command: Command }>> = {
  run: async () => await import('./main.js'),
  drain: async () => await import('./drain/cli.js'),
  instances: async () => await import('./registry/cli.js'),
  demo: async () => await loadDemo(),
  inject: async () => await import('./inject/cli.js'),
  webhook: async () => await import('./inject/webhook.js'),
  checker: async () => await import('./checker/cli.js')
}

const USAGE = `usage: doorman [command] [options]

commands:
  run                         the sidecar (the default)
  drain                       ask the local sidecar to drain; exit when drained (preStop hook)
  inject [-f FILE]            inject the sidecar into annotated Kubernetes YAML (stdin or FILE)
  webhook                     the mutating admission webhook server
  checker                     the central active health checker
  checker mode [SCOPE] [MODE] show or set the checker's run-time mode
  demo                        the seed incident replayed with and without doorman
  instances SERVICE [--json]  list a service's instances from the registry

Settings come from DOORMAN_* environment variables; see docs/configuration.md.
Exit codes: 0 clean stop, 78 bad configuration, 1 anything else.
`

/**
 * The demo lives beside the sidecar in a clone (tools/, its own npm workspace), never in the package or the image:
 * from a clone it is loaded from there; elsewhere the command says where to get it.
 */
async function loadDemo (): Promise<{ command: Command }> {
  const url = new URL('../tools/dist/demo/index.js', import.meta.url)
  try {
    return await import(url.href) as { command: Command }
  } catch (err) {
    const e = err as { code?: string, url?: string, message?: string }
    if (e.code !== 'ERR_MODULE_NOT_FOUND' || !(e.url === url.href || (e.message ?? '').includes(url.pathname))) throw err
    return {
      command: async () => {
        process.stderr.write(`doorman demo: the demo is not installed here (it ships with the source, not with the package or the image).
Run it from a clone of the repository:
  npm ci && npm run demo
(${url.pathname} not found)
`)
        return 1
      }
    }
  }
}

async function main (argv: string[]): Promise<number> {
  const [first, ...rest] = argv
  if (first === '-h' || first === '--help' || first === 'help') { process.stdout.write(USAGE); return 0 }
  if (first === '-v' || first === '--version') {
    const { version } = await import('./core/version.js')
    process.stdout.write(`${version}\n`)
    return 0
  }
  const name = first === undefined || first.startsWith('-') ? 'run' : first
  const args = first === undefined || first.startsWith('-') ? argv : rest
  const load = COMMANDS[name]
  if (load === undefined) {
    process.stderr.write(`doorman: unknown command ${JSON.stringify(name)}\n\n${USAGE}`)
    return 1
  }
  const mod = await load()
  return await mod.command(args)
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code
  // Servers resolve only when they have stopped; give stdout a tick to flush, then leave.
  setImmediate(() => process.exit(code))
}, (err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`doorman: bad configuration: ${err.message}\n`)
    process.exit(78)
  }
  process.stderr.write(`doorman: ${(err as Error)?.stack ?? String(err)}\n`)
  process.exit(1)
})
