// The lane's live status page (GET / on the admin port) in headless Chromium: its cards show what /state says,
// its chart draws in flight against the limit while traffic flows, and it lists the heaviest flows.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import http from 'node:http'
import { startServer, startDoorman, waitFor, request } from './helpers/index.js'
import { launchBrowser } from './helpers/browser.js'

t.test('the status page shows the lane state and draws its chart', async (t) => {
  t.saveFixture = true
  const dir = t.testdir({})
  // An app that holds each request for 300 ms, so requests are in flight and queued while the page watches.
  const app = await startServer(t, (_req, res) => { setTimeout(() => { res.end('ok\n') }, 300) })
  const limit = 4
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_MAX_CONCURRENCY: String(limit), DOORMAN_MAX_QUEUE: '2', DOORMAN_SERVICE: 'orders' })

  const agent = new http.Agent({ keepAlive: true })
  t.teardown(() => { agent.destroy() })
  let sending = true
  const send = (): void => {
    if (!sending) return
    // A shed request is retried after a pause, as a client honouring retry-after would (not in a tight loop).
    const req = http.get({ port: dm.inbound, path: '/work', agent }, (res) => { res.resume(); res.on('end', () => { setTimeout(send, res.statusCode === 503 ? 200 : 0) }) })
    req.on('error', () => { setTimeout(send, 50) })
  }
  // Eight clients in a loop: four in flight, two queued, the rest shed.
  for (let i = 0; i < 8; i++) send()
  t.teardown(() => { sending = false })

  const browser = await launchBrowser(t)
  const page = await browser.newPage({ viewport: { width: 1000, height: 640 } })
  const errors: string[] = []
  page.on('pageerror', (err) => { errors.push(err.message) })
  const res = await request(dm.admin, { path: '/' })
  t.equal(res.status, 200)
  t.match(res.headers['content-type'], /text\/html/)
  await page.goto(`http://127.0.0.1:${dm.admin}/`)

  const card = async (name: string): Promise<string> => (await page.locator(`.card[data-field="${name}"] b`).textContent({ timeout: 10_000 })) ?? ''
  t.equal(await card('limit'), String(limit), 'the limit card shows the configured limit')
  t.equal(await card('phase'), 'serving')
  for (const name of ['in flight', 'queued', 'shed', 'warmup', 'registered', 'ready']) t.ok(await card(name) !== '', `the ${name} card has a value`)
  t.match(await page.locator('#svc').textContent(), /orders/, 'the service name is in the heading')

  // The page polls /state every second: wait until it has seen requests in flight and shed ones.
  await waitFor('the page to show requests in flight', async () => Number(await card('in flight')) > 0, 15_000, 200)
  await waitFor('the page to show shed requests', async () => Number(await card('shed')) > 0, 15_000, 200)
  await waitFor('the chart to have several points', async () => {
    const d = await page.locator('#inflight').getAttribute('d')
    return d !== null && (d.match(/L/g) ?? []).length >= 3
  }, 15_000, 200)
  const box = await page.locator('#inflight').evaluate((p) => { const b = (p as SVGGraphicsElement).getBBox(); return { width: b.width, height: b.height } })
  t.ok(box.width > 0, 'the in-flight line is drawn', { box, d: await page.locator('#inflight').getAttribute('d') })
  t.equal(await page.locator('#limit').evaluate((p) => (p.getAttribute('d') ?? '').length > 0), true, 'the limit line is drawn')
  // Fair queuing is on by default: the heaviest flows are listed (one here: every client is this process's address).
  await waitFor('the page to list the heaviest flows', async () => await page.locator('#flows tbody tr').count() > 0, 15_000, 200)
  t.match(await page.locator('#flows tbody tr').first().locator('td').first().textContent(), /^ip:/, 'a flow keyed by the client address')
  t.same(errors, [], 'no script errors')

  const shot = path.join(dir, 'status-page.png')
  await page.screenshot({ path: shot, fullPage: true })
  t.ok(fs.statSync(shot).size > 5_000, `screenshot saved: ${shot}`)
  sending = false
})
