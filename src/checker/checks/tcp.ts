// `tcp`: a connect to the port, closed at once. Says only that something accepts connections (a stopped process's
// socket still does: prefer http or grpc where the target speaks them).
import net from 'node:net'
import type { TcpCheck } from '../../check/spec.js'
import { errorCode, type CheckCall, type CheckModule, type CheckOutcome } from './types.js'

/** A TCP connect to host:port within `timeout`; used by the `tcp` check and by the default check without a lane. */
export async function tcpConnect (host: string, port: number, timeout: number): Promise<CheckOutcome> {
  return await new Promise((resolve) => {
    const socket = net.connect({ host, port })
    const finish = (outcome: CheckOutcome['outcome'], detail: string): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve({ outcome, detail })
    }
    const timer = setTimeout(() => { finish('timeout', 'timeout') }, timeout)
    socket.once('connect', () => { finish('ok', 'connected') })
    socket.once('error', (err) => { const code = errorCode(err); finish(code === 'ECONNREFUSED' ? 'refused' : 'error', code) })
  })
}

export class TcpCheckModule implements CheckModule<TcpCheck> {
  readonly type = 'tcp' as const
  async probe (_spec: TcpCheck, call: CheckCall): Promise<CheckOutcome> {
    return await tcpConnect(call.host, call.port, call.timeout)
  }

  async close (): Promise<void> {}
}
