// `doorman inject [-f FILE]`: Kubernetes YAML in (stdin or FILE, multi-document), the same YAML out with the sidecar
// injected into every pod template that opts in. Documents it doesn't change are written back byte for byte; the
// ones it changes keep their comments. Malformed input: a message naming the document, nothing on stdout, exit 1.
import { readFileSync } from 'node:fs'
import { parseAllDocuments, type Document } from 'yaml'
import { loadConfig } from '../config/index.js'
import { InjectError, defaultImage, type InjectOptions, type Mode } from './pod.js'
import { injectObject, serviceWarnings, type ObjectResult } from './workload.js'
import { diff, applyToYaml } from './patch.js'

const USAGE = `usage: doorman inject [-f FILE] [--mode native|container] [--image IMAGE] [--drain-token TOKEN]

Reads Kubernetes YAML (stdin, or FILE; "-" is stdin), writes it to stdout with the doorman sidecar injected into
every pod template annotated doorman.io/inject: "enabled". Warnings go to stderr.

  -f, --filename FILE   read FILE instead of stdin
  --mode MODE           native (default; an init container with restartPolicy: Always, Kubernetes 1.29+) or
                        container (a plain container); default from DOORMAN_SIDECAR_MODE
  --image IMAGE         the sidecar image; default from DOORMAN_SIDECAR_IMAGE, else doorman:<version>
  --drain-token TOKEN   a token the app's preStop hook sends to the sidecar's lane (also set as its
                        DOORMAN_ADMIN_TOKEN); without it the lane accepts the hook from the node's address
`

class UsageError extends Error {}

interface Args { file?: string, mode?: string, image?: string, drainToken?: string, help: boolean }

function parseArgs (args: string[]): Args {
  const out: Args = { help: false }
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
    const value = (): string => {
      const v = inline ?? args[++i]
      if (v === undefined) throw new UsageError(`${flag} needs a value`)
      return v
    }
    switch (flag) {
      case '-h': case '--help': out.help = true; break
      case '-f': case '--filename': out.file = value(); break
      case '--mode': out.mode = value(); break
      case '--image': out.image = value(); break
      case '--drain-token': out.drainToken = value(); break
      default: throw new UsageError(`unknown argument ${JSON.stringify(a)}`)
    }
  }
  if (out.mode !== undefined && out.mode !== 'native' && out.mode !== 'container') throw new UsageError(`--mode: got ${JSON.stringify(out.mode)}; expected native or container`)
  if (out.drainToken !== undefined && !/^[\x21-\x7e]+$/.test(out.drainToken)) throw new UsageError('--drain-token: expected printable characters without spaces')
  return out
}

async function readStdin (): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

export interface InjectTextResult { text: string, warnings: string[] }

/** Injects into a multi-document YAML text. Throws InjectError (or a YAML error message) on bad input. */
export function injectYaml (text: string, opts: InjectOptions, source = 'stdin'): InjectTextResult {
  const docs = parseAllDocuments(text, { prettyErrors: true, uniqueKeys: true })
  if (!Array.isArray(docs)) return { text, warnings: [] }
  const warnings: string[] = []
  docs.forEach((d, i) => {
    const err = d.errors[0]
    if (err !== undefined) throw new InjectError(`${source}: document ${i + 1}: ${err.message.trim()}`)
  })
  const objects = docs.map((d) => d.toJS({ maxAliasCount: 1000 }) as unknown)
  const takeovers: ObjectResult['takeovers'] = []
  const changed = new Set<number>()
  objects.forEach((o, i) => {
    let r: ObjectResult
    try {
      r = injectObject(o, opts)
    } catch (err) {
      if (err instanceof InjectError) throw new InjectError(`${source}: document ${i + 1}: ${err.message}`)
      throw err
    }
    warnings.push(...r.warnings)
    takeovers.push(...r.takeovers)
    if (r.injected.length === 0) return
    applyToYaml(docs[i], diff(o, r.object))
    changed.add(i)
  })
  warnings.push(...serviceWarnings(objects, takeovers))
  if (changed.size === 0) return { text, warnings }
  let out = text.slice(0, docs[0].range[0])
  docs.forEach((d, i) => {
    if (!changed.has(i)) { out += text.slice(d.range[0], d.range[2]); return }
    // A changed document is written by the YAML library (keeping its comments); the first one carries the comments
    // that stood before it, so drop the copy of them taken from the source.
    if (i === 0) out = ''
    if (out !== '' && !out.endsWith('\n')) out += '\n'
    out += render(d, text, i > 0)
  })
  const tail = text.slice(docs[docs.length - 1].range[2])
  if (!changed.has(docs.length - 1) || tail.trim() !== '') out += tail
  return { text: out, warnings }
}

function render (d: Document, source: string, separate: boolean): string {
  // Keep the source's list style: `- name` under its key, or indented by two.
  const indentSeq = !/^( *)[^\s#][^\n]*:\n\1- /m.test(source)
  let s = d.toString({ indentSeq, lineWidth: 0 })
  if (separate && !s.startsWith('---')) s = '---\n' + s
  return s
}

export async function command (args: string[]): Promise<number> {
  let parsed: Args
  try {
    parsed = parseArgs(args)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`doorman inject: ${err.message}\n\n${USAGE}`)
    return 1
  }
  if (parsed.help) { process.stdout.write(USAGE); return 0 }
  const cfg = loadConfig()
  const opts = {
    mode: (parsed.mode ?? cfg.sidecarMode) as Mode,
    image: parsed.image ?? (cfg.sidecarImage !== '' ? cfg.sidecarImage : defaultImage()),
    env: cfg.sidecarEnv,
    resources: cfg.sidecarResources,
    drainToken: parsed.drainToken
  }
  const source = parsed.file === undefined || parsed.file === '-' ? 'stdin' : parsed.file
  let text: string
  try {
    text = source === 'stdin' ? await readStdin() : readFileSync(source, 'utf8')
  } catch (err) {
    process.stderr.write(`doorman inject: can't read ${source}: ${(err as Error).message}\n`)
    return 1
  }
  let result: InjectTextResult
  try {
    result = injectYaml(text, opts, source)
  } catch (err) {
    if (!(err instanceof InjectError)) throw err
    process.stderr.write(`doorman inject: ${err.message}\n`)
    return 1
  }
  for (const w of result.warnings) process.stderr.write(`doorman inject: warning: ${w}\n`)
  await new Promise<void>((resolve, reject) => { process.stdout.write(result.text, (err) => { if (err != null) reject(err); else resolve() }) })
  return 0
}
