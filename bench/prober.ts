// The prober's process: stands for kubelet. Asked over IPC, it probes the given targets in turn (a new connection
// each, as kubelet does) every `everyMs` for `seconds` or `count` probes, and answers with every sample by label.
import { probe, sleep, type ProbeRequest, type ProbeSamples } from './lib.js'

process.on('message', (msg: ProbeRequest) => {
  void (async () => {
    const out: ProbeSamples = Object.fromEntries(msg.targets.map((t) => [t.label, []]))
    const end = msg.seconds === undefined ? Infinity : performance.now() + msg.seconds * 1000
    const count = msg.count ?? Infinity
    for (let i = 0; i < count && performance.now() < end; i++) {
      const t = msg.targets[i % msg.targets.length]
      out[t.label].push(await probe(t.port, t.path, 2000))
      await sleep(msg.everyMs)
    }
    process.send?.(out)
  })().catch((err: Error) => { process.send?.({ error: err.message }) })
})
process.on('disconnect', () => { process.exit(0) })
