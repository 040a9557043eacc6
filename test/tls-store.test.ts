// The certificate store: the files of csi-driver-spiffe's layout read, checked (key matching, SPIFFE ID, validity),
// rotated by an atomic symlink swap, a broken pair refused with the last good one kept, validity judged on the clock.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { X509Certificate } from 'node:crypto'
import { CertStore, parsePair } from '../src/tls/store.js'
import { spiffeIdOf, certHash, isSpiffeId } from '../src/tls/spiffe.js'
import { silentLogger } from '../src/core/log.js'
import { Pki, writeAtomic, past, future } from './helpers/pki.js'
import { waitFor } from './helpers/index.js'

const A = 'spiffe://cluster.local/ns/shop/sa/cart'
const B = 'spiffe://cluster.local/ns/shop/sa/cart-next'

t.test('SPIFFE IDs from certificates', async (t) => {
  const pki = new Pki(t)
  const ca = pki.ca('ca')
  t.equal(spiffeIdOf(new X509Certificate(pki.leaf(ca, { id: A }).cert)), A)
  t.equal(spiffeIdOf(new X509Certificate(pki.leaf(ca, { id: null }).cert)), null, 'no URI SAN')
  t.equal(spiffeIdOf(new X509Certificate(pki.leaf(ca, { id: 'https://example.com/x' }).cert)), null, 'a URI SAN that is not SPIFFE')
  t.match(certHash(new X509Certificate(ca.cert)), /^[0-9a-f]{64}$/)
  t.notOk(isSpiffeId('spiffe://td/a/../b'))
  t.ok(isSpiffeId('spiffe://td'))
})

t.test('parsePair says why a pair is refused', async (t) => {
  const pki = new Pki(t)
  const ca = pki.ca('ca')
  const a = pki.leaf(ca, { id: A })
  const b = pki.leaf(ca, { id: B })
  t.match(parsePair(a.cert, a.key, ca.cert), { ok: true, pair: { id: A } })
  t.match(parsePair(a.cert, b.key, ca.cert), { ok: false, problem: 'key-mismatch' })
  t.match(parsePair(a.cert.slice(0, 200), a.key, ca.cert), { ok: false, problem: 'unreadable' }, 'half-written certificate')
  t.match(parsePair(a.cert, a.key.slice(0, 100), ca.cert), { ok: false, problem: 'unreadable' }, 'half-written key')
  t.match(parsePair(a.cert, a.key, 'nothing'), { ok: false, problem: 'bad-ca' })
  const plain = pki.leaf(ca, { id: null })
  t.match(parsePair(plain.cert, plain.key, ca.cert), { ok: false, problem: 'no-spiffe-id' })
})

t.test('load, rotate by symlink swap, refuse a broken pair and keep the last good one', async (t) => {
  const pki = new Pki(t)
  const ca = pki.ca('ca')
  const a = pki.leaf(ca, { id: A })
  const b = pki.leaf(ca, { id: B })
  const dir = pki.workload('w', a, ca.cert)
  t.ok(fs.lstatSync(path.join(dir, '..data')).isSymbolicLink(), 'the csi layout')
  const store = new CertStore({ dir, log: silentLogger(), pollMs: 200 })
  t.teardown(() => { store.close() })
  const seen: string[] = []
  store.onChange((p) => seen.push(p.id))
  store.start()
  t.equal(store.current?.id, A)
  t.equal(store.status().problem, null)
  const ttl = store.expiresIn() as number
  t.ok(ttl > 80_000 && ttl <= 86_400, `expires in ${ttl}s`)

  writeAtomic(dir, { 'tls.crt': b.cert, 'tls.key': b.key, 'ca.crt': ca.cert })
  await waitFor('the rotated pair', () => store.current?.id === B, 5000)
  t.same(seen, [B])
  t.equal(store.current?.generation, 2)

  // A mismatched pair (the certificate of one, the key of another), then a half-written certificate: refused.
  writeAtomic(dir, { 'tls.crt': a.cert, 'tls.key': b.key, 'ca.crt': ca.cert })
  await waitFor('the refusal', () => store.reloads.refused >= 1, 5000)
  t.equal(store.current?.id, B, 'the last good pair stays')
  t.equal(store.status().problem, null, 'and doorman stays ready')
  writeAtomic(dir, { 'tls.crt': a.cert.slice(0, 300), 'tls.key': a.key, 'ca.crt': ca.cert })
  await waitFor('the second refusal', () => store.reloads.refused >= 2, 5000)
  t.equal(store.current?.id, B)
  // A plain in-place write (a Secret mounted without the symlinks, an editor) is seen as well.
  fs.writeFileSync(path.join(dir, '..data', 'tls.crt'), a.cert)
  await waitFor('the repaired pair', () => store.current?.id === A, 5000)
  t.same(seen, [B, A])
})

t.test('validity: not ready when missing, expired or not yet valid; an expired pair never replaces a valid one', async (t) => {
  const pki = new Pki(t)
  const ca = pki.ca('ca')
  const missing = new CertStore({ dir: path.join(pki.dir, 'nowhere'), log: silentLogger() })
  missing.start()
  t.teardown(() => { missing.close() })
  t.equal(missing.status().problem, 'missing')
  t.equal(missing.expiresIn(), undefined)

  const expired = pki.leaf(ca, { id: A, start: past(2 * 86_400_000), end: past(86_400_000) })
  const dir = pki.workload('expired', expired, ca.cert)
  const s = new CertStore({ dir, log: silentLogger(), pollMs: 200 })
  t.teardown(() => { s.close() })
  s.start()
  t.equal(s.current?.id, A, 'taken, for want of a better one')
  t.equal(s.status().problem, 'expired')
  t.ok((s.expiresIn() as number) < 0)

  const early = pki.leaf(ca, { id: A, start: future(3_600_000), end: future(7_200_000) })
  const dir2 = pki.workload('early', early, ca.cert)
  let now = Date.now()
  const s2 = new CertStore({ dir: dir2, log: silentLogger(), now: () => now, pollMs: 200 })
  t.teardown(() => { s2.close() })
  s2.start()
  t.equal(s2.status().problem, 'not-yet-valid')
  now += 3_700_000
  t.equal(s2.status().problem, null, 'valid once its time comes')
  now += 3_600_000
  t.equal(s2.status().problem, 'expired', 'and not ready once it runs out while in use')

  const good = pki.leaf(ca, { id: B })
  const dir3 = pki.workload('good', good, ca.cert)
  const s3 = new CertStore({ dir: dir3, log: silentLogger(), pollMs: 200 })
  t.teardown(() => { s3.close() })
  s3.start()
  writeAtomic(dir3, { 'tls.crt': expired.cert, 'tls.key': expired.key, 'ca.crt': ca.cert })
  await waitFor('the refusal', () => s3.reloads.refused >= 1, 5000)
  t.equal(s3.current?.id, B)
  t.equal(s3.status().problem, null)
})
