// Certificates for the mTLS tests, made with Debian's openssl CLI in a temporary directory: certificate authorities
// and leaf certificates with SPIFFE URI SANs (also expired ones, not-yet-valid ones, and ones without a URI SAN).
// Workload directories are laid out as cert-manager's csi-driver-spiffe mounts them (tls.crt, tls.key, ca.crt) and
// rotated as kubelet's AtomicWriter does it: the files written into a new timestamped directory, `..data` switched to
// it by renaming a symlink over it, the visible names symlinks through `..data`.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

interface Teardown { teardown: (fn: () => unknown) => void }

export interface Ca { name: string, cert: string, key: string, certFile: string, keyFile: string }
export interface Leaf { cert: string, key: string }

export interface LeafOptions {
  /** The SPIFFE ID as URI SAN; null: no URI SAN at all. */
  id: string | null
  /** openssl ca dates (YYYYMMDDHHMMSSZ); default: an hour ago to a day from now. */
  start?: string
  end?: string
}

function stamp (ms: number): string {
  return new Date(ms).toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z').slice(2)
}

export class Pki {
  readonly dir: string
  #n = 0

  constructor (t: Teardown) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'doorman-pki-'))
    t.teardown(() => { fs.rmSync(this.dir, { recursive: true, force: true }) })
  }

  #openssl (...args: string[]): void {
    execFileSync('openssl', args, { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] })
  }

  /** A self-signed CA (EC P-256). */
  ca (name: string): Ca {
    const certFile = path.join(this.dir, `${name}.crt`)
    const keyFile = path.join(this.dir, `${name}.key`)
    this.#openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile,
      '-days', '2', '-subj', `/O=doorman tests/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    return { name, cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8'), certFile, keyFile }
  }

  /** A leaf certificate signed by `ca`, for client and server use, with `id` as its one URI SAN. */
  leaf (ca: Ca, opts: LeafOptions): Leaf {
    const n = ++this.#n
    const base = path.join(this.dir, `leaf${n}`)
    const db = path.join(this.dir, `db${n}`)
    fs.mkdirSync(db)
    fs.writeFileSync(path.join(db, 'index.txt'), '')
    fs.writeFileSync(path.join(db, 'serial'), `${(1000 + n).toString(16).padStart(4, '0')}\n`)
    const ext = ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth,clientAuth']
    if (opts.id !== null) ext.push(`subjectAltName=URI:${opts.id}`)
    fs.writeFileSync(`${base}.ext`, ext.join('\n') + '\n')
    fs.writeFileSync(`${base}.cnf`, [
      '[ca]', 'default_ca = d', '[d]', `database = ${db}/index.txt`, `new_certs_dir = ${db}`, `serial = ${db}/serial`,
      'default_md = sha256', 'policy = p', 'unique_subject = no', 'email_in_dn = no', '[p]', 'organizationName = optional', 'commonName = supplied', ''
    ].join('\n'))
    this.#openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/O=doorman tests/CN=leaf${n}`)
    const now = Date.now()
    this.#openssl('ca', '-batch', '-notext', '-config', `${base}.cnf`, '-cert', ca.certFile, '-keyfile', ca.keyFile, '-in', `${base}.csr`, '-out', `${base}.crt`,
      '-extfile', `${base}.ext`, '-startdate', opts.start ?? stamp(now - 3_600_000), '-enddate', opts.end ?? stamp(now + 86_400_000))
    return { cert: fs.readFileSync(`${base}.crt`, 'utf8'), key: fs.readFileSync(`${base}.key`, 'utf8') }
  }

  /** A workload's directory (csi-driver-spiffe's layout) holding `leaf` and the bundle `caPem`. */
  workload (name: string, leaf: Leaf, caPem: string): string {
    const dir = path.join(this.dir, name)
    fs.mkdirSync(dir)
    writeAtomic(dir, { 'tls.crt': leaf.cert, 'tls.key': leaf.key, 'ca.crt': caPem })
    return dir
  }
}

export const past = (ms: number): string => stamp(Date.now() - ms)
export const future = (ms: number): string => stamp(Date.now() + ms)

let seq = 0

/**
 * Writes `files` into `dir` as kubelet's AtomicWriter does: into a new `..<timestamp>` directory, then `..data`
 * switched to it by renaming a fresh symlink over it (one atomic step), the visible names symlinks into `..data`
 * (made once), the previous timestamped directory removed.
 */
export function writeAtomic (dir: string, files: Record<string, string>): void {
  const ts = `..${new Date().toISOString().replace(/[-:.]/g, '_')}_${process.pid}_${++seq}`
  fs.mkdirSync(path.join(dir, ts))
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, ts, name), text, { mode: 0o600 })
  const data = path.join(dir, '..data')
  let old: string | null = null
  try { old = fs.readlinkSync(data) } catch {}
  fs.symlinkSync(ts, path.join(dir, '..data_tmp'))
  fs.renameSync(path.join(dir, '..data_tmp'), data)
  for (const name of Object.keys(files)) {
    const link = path.join(dir, name)
    if (!fs.existsSync(link)) fs.symlinkSync(path.join('..data', name), link)
  }
  if (old !== null && old !== ts) fs.rmSync(path.join(dir, old), { recursive: true, force: true })
}
