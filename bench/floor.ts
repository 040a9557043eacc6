// The floor for doorman's design on this runtime: a bare http.Server on the main thread answering like the bench's
// app, and a second one in a worker thread (doorman's lane), nothing else. Runs as its own process (forked by the
// runner) and reports its port, and the memory limit Node saw, over IPC; asked `heaps`, it answers with the V8 heap
// size of each thread.
import { Worker, isMainThread, parentPort } from 'node:worker_threads'
import { getHeapStatistics } from 'node:v8'

// Without an ESM facade, as doorman loads it (src/core/http.ts): `import http from 'node:http'` costs each thread
// about 15 MB more on Node 26, which would raise the floor, not measure it.
const http = process.getBuiltinModule('node:http')

const BODY = Buffer.from('{"ok":true,"service":"bench-app","items":[1,2,3,4,5,6,7,8]}\n')
const server = http.createServer({ keepAliveTimeout: 60_000 }, (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length })
  res.end(BODY)
})

if (isMainThread) {
  const worker = new Worker(new URL(import.meta.url))
  worker.once('message', () => {
    server.listen(0, '127.0.0.1', () => {
      process.send?.({ port: (server.address() as { port: number }).port, constrainedMemory: process.constrainedMemory() })
    })
  })
  process.on('message', (m) => {
    if (m !== 'heaps') return
    void worker.getHeapStatistics().then((lane) => { process.send?.({ main: getHeapStatistics().total_heap_size, lane: lane.total_heap_size }) })
  })
  process.on('disconnect', () => { process.exit(0) })
} else {
  server.listen(0, '127.0.0.1', () => { parentPort?.postMessage('listening') })
}
