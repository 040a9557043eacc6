// The polling helper every end-to-end test waits with: what counts as "not yet", and the deadline.
import t from 'tap'
import { waitFor } from './helpers/index.js'

t.test('undefined, null and false mean not yet; the first other value is the answer, 0 and empty text included', async (t) => {
  for (const answer of [0, '', 'x', 7, true, {}] as const) {
    const seen = [undefined, null, false, answer]
    let calls = 0
    const got = await waitFor(`answer ${JSON.stringify(answer)}`, () => seen[calls++], 5000, 1)
    t.equal(got, answer, `resolves with ${JSON.stringify(answer)}`)
    t.equal(calls, 4, 'after polling through the three not-yets')
  }
})

t.test('an async poll that throws is retried; the deadline throws with the last error', async (t) => {
  let calls = 0
  t.equal(await waitFor('a flaky poll', async () => { if (++calls < 3) throw new Error('not up'); return 'up' }, 5000, 1), 'up')
  await t.rejects(waitFor('something that never comes', () => { throw new Error('refused') }, 50, 5), /timed out after 50ms waiting for something that never comes: Error: refused/)
  await t.rejects(waitFor('a false that stays false', () => false, 50, 5), /timed out after 50ms waiting for a false that stays false$/)
})
