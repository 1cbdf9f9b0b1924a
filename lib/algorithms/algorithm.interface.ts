/** The algorithms a rule can use. Each has a memory implementation and a Lua twin. */
export type AlgorithmName =
  | 'fixed-window'
  | 'sliding-window-log'
  | 'sliding-window-counter'
  | 'token-bucket'
  | 'leaky-bucket'
  | 'gcra';

/** What an algorithm needs to know about a rule. */
export interface AlgorithmRule {
  readonly limit: number;
  readonly windowMs: number;
  /** Capacity of bucket-like algorithms; `limit` unless configured. */
  readonly burst: number;
}

/** Per-key state kept by the memory storage. From `expiresAt` on it is the same as no state. */
export interface AlgorithmState {
  expiresAt: number;
}

/** One rule's verdict on one request, before the other rules of the check are known. */
export interface AlgorithmOutcome<S extends AlgorithmState = AlgorithmState> {
  readonly allowed: boolean;
  /** Quota left after this request if admitted; the quota left now if denied. May be fractional. */
  readonly remaining: number;
  /** 0 when allowed; otherwise how long until the same request would pass. */
  readonly retryAfterMs: number;
  /** How long until the quota is fully restored. */
  readonly resetMs: number;
  /** The state to store if the whole check is admitted. */
  readonly next?: S;
}

/**
 * One algorithm: its in-memory arithmetic and, in `lua`, the same arithmetic for Redis.
 *
 * `lua` is a Lua function expression `function(key, now, limit, window, burst, cost)` returning
 * `allowed (0|1), remaining, retryAfterMs, resetMs, commit` where `commit()` writes the new state.
 * Both halves evaluate the same expressions in the same order on IEEE doubles, and Lua stores
 * fractions with 17 significant digits (`num`), so they agree to the bit. The conformance suite
 * holds them to it.
 */
export interface RateLimitAlgorithm<S extends AlgorithmState = AlgorithmState> {
  readonly name: AlgorithmName;
  /** Short code used in storage keys and in the Lua dispatcher. */
  readonly code: string;
  /** Whether capacity is `burst` (bucket-like) rather than `limit` (window-like). */
  readonly usesBurst: boolean;
  readonly lua: string;
  check(state: S | undefined, now: number, rule: AlgorithmRule, cost: number): AlgorithmOutcome<S>;
}
