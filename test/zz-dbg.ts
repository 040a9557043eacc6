import { Wire, get } from '/work/main/test/helpers/h2wire.js'
import http from 'node:http'
import { spawn } from 'node:child_process'
const app = http.createServer((req, res) => { console.log('app saw', req.url); res.end('ok') }).listen(0, '127.0.0.1')
await new Promise(r => app.once('listening', r))
const ap = (app.address() as any).port
const p = spawn(process.execPath, ['/work/main/dist/cli.js', 'run'], { env: { ...process.env, DOORMAN_APP_PORT: String(ap), DOORMAN_INBOUND_PORT: '23456', DOORMAN_ADMIN_PORT: '23457', DOORMAN_OUTBOUND_PORT: '0', DOORMAN_BIND_HOST: '127.0.0.1' }, stdio: 'inherit' })
await new Promise(r => setTimeout(r, 1500))
for (const ack of [false, true]) {
  const w = await Wire.open(23456, { ackSettings: ack })
  await new Promise(r => setTimeout(r, 200))
  w.send(get(1, '/', 'app', [['x-big', 'a'.repeat(60 * 1024)]]))
  await new Promise(r => setTimeout(r, 1000))
  console.log(ack, w.frames.map(f => [f.type, f.flags, f.stream, f.payload.length, f.type===7||f.type===3 ? f.payload.toString('hex') : '']), w.closed)
  w.destroy()
}
const m = await (await fetch('http://127.0.0.1:23457/metrics')).text()
console.log(m.split('\n').filter(l => l.includes('connections') || l.includes('client_errors')).join('\n'))
p.kill(); app.close()
