// Why doorman has no usable certificate. The lane thread publishes the index (slot S.TLS: 0 = fine or mTLS off,
// else 1 + the index), so the order is fixed; this file imports nothing, the lane loads it.
export const TLS_PROBLEMS = ['missing', 'unreadable', 'key-mismatch', 'no-spiffe-id', 'not-yet-valid', 'expired', 'bad-ca'] as const
export type TlsProblem = typeof TLS_PROBLEMS[number]
