// `doorman run`: the sidecar. Loads the config, starts the sidecar, turns signals into a drain.
import { loadConfig, unknownSettings } from './config/index.js'
import { createLogger } from './core/log.js'
import { Sidecar } from './sidecar.js'

export async function command (_args: string[]): Promise<number> {
  const cfg = loadConfig(undefined, { sidecar: true })
  const log = createLogger(cfg.logLevel)
  for (const { variable, closest } of unknownSettings()) {
    log.warn({ variable, closest }, `${variable} is not a doorman setting and is ignored: did you mean ${closest}?`)
  }
  const sidecar = await Sidecar.create(cfg, log)
  try {
    await sidecar.start()
  } catch (err) {
    log.fatal({ err }, 'doorman could not start')
    await sidecar.destroy()
    return 1
  }
  let signals = 0
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++
    if (signals === 1) {
      log.info({ signal: sig }, 'signal received: draining')
      void sidecar.drain(sig)
    } else if (sig === 'SIGINT') {
      log.warn({ signal: sig }, 'second interrupt: cutting the drain short')
      sidecar.drainer.force()
    } else {
      log.info({ signal: sig }, 'already draining')
    }
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  const code = await sidecar.stopped
  process.off('SIGTERM', onSignal)
  process.off('SIGINT', onSignal)
  return code
}
