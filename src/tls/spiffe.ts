// SPIFFE IDs in X.509 certificates (X509-SVIDs): the workload's identity is the certificate's one URI SAN of the form
// spiffe://<trust-domain>/<path>. Parsing is Node's (crypto.X509Certificate); nothing here reads ASN.1.
import { createHash, type X509Certificate } from 'node:crypto'

/** A SPIFFE ID: the scheme, a trust domain, and a path of non-empty segments (no query, fragment or dot segments). */
const SPIFFE_ID = /^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/

export function isSpiffeId (s: string): boolean {
  if (!SPIFFE_ID.test(s)) return false
  return !s.slice(9).split('/').slice(1).some((seg) => seg === '.' || seg === '..')
}

/**
 * The certificate's SPIFFE ID, or null when it has none or more than one URI SAN (an X509-SVID carries exactly one).
 * Node gives the SAN list as text (`DNS:a, URI:spiffe://…`); a value with a comma in it comes quoted, and a SPIFFE ID
 * has none.
 */
export function spiffeIdOf (cert: X509Certificate): string | null {
  const san = cert.subjectAltName
  if (san === undefined || san === '') return null
  const uris = san.split(', ').filter((e) => e.startsWith('URI:')).map((e) => e.slice(4))
  if (uris.length !== 1) return null
  return isSpiffeId(uris[0]) ? uris[0] : null
}

/** The SHA-256 of the certificate's DER, in hex: x-forwarded-client-cert's `Hash=`. */
export function certHash (cert: X509Certificate): string {
  return createHash('sha256').update(cert.raw).digest('hex')
}
