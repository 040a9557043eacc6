// The demo's gRPC service, shared by its provider app and its caller: one unary method with JSON messages.
// grpc-js is a devDependency (the demo runs from a clone after `npm ci`), loaded with a dynamic import so that
// `doorman run` never needs it.
export interface CallRequest { id: number }
export interface CallReply { id: number, instance: string }

// The few grpc-js names the demo uses, typed loosely: the module itself is imported at run time.
export type Grpc = typeof import('@grpc/grpc-js')

const json = {
  serialize: (v: unknown): Buffer => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer): any => JSON.parse(b.toString('utf8'))
}

export const EVALUATE = {
  Call: {
    path: '/demo.Evaluate/Call',
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
    originalName: 'call'
  }
}

/** grpc-js, or null when it is not installed (a production install without devDependencies). */
export async function loadGrpc (): Promise<Grpc | null> {
  try {
    return await import('@grpc/grpc-js')
  } catch {
    return null
  }
}
