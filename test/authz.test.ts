// DOORMAN_ALLOW: parsing, patterns (`*` = one segment), per-path rules by longest prefix, path normalization.
import t from 'tap'
import { Authorizer, parseAllow, compilePattern, normalizePath, AllowError } from '../src/authz/index.js'

const SHOP = 'spiffe://cluster.local/ns/shop/sa/cart'
const OPS = 'spiffe://cluster.local/ns/ops/sa/oncall'
const OTHER = 'spiffe://cluster.local/ns/web/sa/front'

t.test('an empty list admits everyone, plaintext callers too', async (t) => {
  const a = Authorizer.parse('')
  t.ok(a.open)
  t.ok(a.pathIndependent)
  t.equal(a.decide(SHOP, '/x'), null)
  t.equal(a.decide(null, '/x'), null)
})

t.test('a pattern: `*` matches exactly one segment', async (t) => {
  const re = compilePattern('spiffe://cluster.local/ns/shop/sa/*')
  t.ok(re.test(SHOP))
  t.notOk(re.test('spiffe://cluster.local/ns/shop/sa/cart/extra'), 'not two segments')
  t.notOk(re.test('spiffe://cluster.local/ns/shop/sa/'), 'not an empty one')
  t.notOk(re.test('spiffe://cluster.local/ns/shopx/sa/cart'))
  t.notOk(compilePattern('spiffe://cluster.local/ns/a.b/sa/x').test('spiffe://cluster.local/ns/aXb/sa/x'), 'a dot is a dot')
  t.ok(compilePattern('spiffe://*/ns/shop/sa/cart').test(SHOP), 'the trust domain may be a wildcard too')
})

t.test('bad entries are refused with the entry named', async (t) => {
  t.throws(() => parseAllow('cluster.local/ns/shop'), { name: 'AllowError' })
  t.throws(() => parseAllow('spiffe://cluster.local/ns/sh*p/sa/x'), /not a path segment/)
  t.throws(() => parseAllow('admin/=spiffe://cluster.local/ns/ops/sa/x'), /starts with \//)
  t.throws(() => parseAllow('/a?b=spiffe://cluster.local/ns/ops/sa/x'), /no \?/)
  t.throws(() => parseAllow('spiffe://cluster.local/../x'), { name: 'AllowError' })
  t.same(parseAllow(' spiffe://a/b , , /admin/=spiffe://a/c ').map((r) => [r.prefix, r.pattern]), [['', 'spiffe://a/b'], ['/admin/', 'spiffe://a/c']])
})

t.test('global rules: allowed, not allowed, unauthenticated; decided without the path', async (t) => {
  const a = Authorizer.parse('spiffe://cluster.local/ns/shop/sa/*,spiffe://cluster.local/ns/ops/sa/oncall')
  t.ok(a.pathIndependent)
  t.equal(a.decide(SHOP, '/'), null)
  t.equal(a.decide(OPS, '/'), null)
  t.equal(a.decide(OTHER, '/'), 'not-allowed')
  t.equal(a.decide(null, '/'), 'unauthenticated')
})

t.test('per-path rules: the longest prefix decides; uncovered paths admit everyone without global rules', async (t) => {
  const a = Authorizer.parse('/admin/=spiffe://cluster.local/ns/ops/sa/oncall,/admin/public/=spiffe://cluster.local/ns/*/sa/*')
  t.notOk(a.pathIndependent)
  t.equal(a.decide(OPS, '/admin/users'), null)
  t.equal(a.decide(SHOP, '/admin/users'), 'not-allowed')
  t.equal(a.decide(null, '/admin/users'), 'unauthenticated')
  t.equal(a.decide(SHOP, '/admin/public/x'), null, 'the longer prefix wins')
  t.equal(a.decide(SHOP, '/orders'), null, 'no rule covers /orders')
  t.equal(a.decide(null, '/orders'), null)
  t.equal(a.decide(SHOP, '/admin'), 'not-allowed', '/admin is the directory /admin/ too')
})

t.test('per-path and global rules together', async (t) => {
  const a = Authorizer.parse('spiffe://cluster.local/ns/shop/sa/*,/admin/=spiffe://cluster.local/ns/ops/sa/oncall')
  t.equal(a.decide(SHOP, '/orders'), null)
  t.equal(a.decide(OPS, '/orders'), 'not-allowed', 'the global rules cover what no prefix does')
  t.equal(a.decide(OPS, '/admin/x'), null)
  t.equal(a.decide(SHOP, '/admin/x'), 'not-allowed', 'the prefix rule replaces the global ones under it')
})

t.test('paths are normalized before prefixes are compared: no way around a rule', async (t) => {
  t.equal(normalizePath('/admin/x?y=1'), '/admin/x')
  t.equal(normalizePath('//admin/x'), '/admin/x')
  t.equal(normalizePath('/a/../admin/x'), '/admin/x')
  t.equal(normalizePath('/./admin/x'), '/admin/x')
  t.equal(normalizePath('/%61dmin/x'), '/admin/x')
  t.equal(normalizePath('/..'), '/')
  t.equal(normalizePath('/%zz'), null)
  const a = Authorizer.parse('/admin/=spiffe://cluster.local/ns/ops/sa/oncall')
  for (const p of ['//admin/x', '/a/../admin/x', '/%61dmin/x', '/admin/./x', '/admin']) t.equal(a.decide(SHOP, p), 'not-allowed', p)
  t.equal(a.decide(SHOP, '/%zz/admin'), 'not-allowed', 'an undecodable path meets every rule')
  t.equal(a.decide(OPS, '/%zz'), null)
})

t.test('gRPC paths work as prefixes', async (t) => {
  const a = Authorizer.parse('/shop.v1.Admin/=spiffe://cluster.local/ns/ops/sa/*')
  t.equal(a.decide(SHOP, '/shop.v1.Admin/Delete'), 'not-allowed')
  t.equal(a.decide(SHOP, '/shop.v1.Orders/Get'), null)
})
