/** The algorithms a rule can use. Each has a memory implementation and a Lua twin. */
export type AlgorithmName = 'fixed-window';

/** What an algorithm needs to know about a rule. */
export interface AlgorithmRule {
  readonly limit: number;
  readonly windowMs: number;
  /** Capacity for bucket-like algorithms; equals `limit` unless configured. */
  readonly burst: number;
}

/** Per-key state kept by the memory storage. `expiresAt` is when it can no longer affect a decision. */
export interface AlgorithmState {
  expiresAt: number;
}

/** One rule's verdict on one request, before the other rules of the check are known. */
export interface AlgorithmOutcome<S extends AlgorithmState = AlgorithmState> {
  readonly allowed: boolean;
  /** Quota left after this request, had it been admitted; the quota left now if denied. */
  readonly remaining: number;
  /** 0 when allowed; otherwise how long until the same request would pass. */
  readonly retryAfterMs: number;
  /** How long until the quota is fully restored. */
  readonly resetMs: number;
  /** The state to store if the whole check is admitted. */
  readonly next: S;
}

/**
 * One algorithm: its in-memory arithmetic and, in `lua`, the same arithmetic for Redis.
 *
 * `lua` is a Lua function expression `function(key, now, limit, window, burst, cost)` returning
 * `allowed (0|1), remaining, retryAfterMs, resetMs, commit` where `commit()` writes the new state.
 * The conformance tests keep the two halves equal.
 */
export interface RateLimitAlgorithm<S extends AlgorithmState = AlgorithmState> {
  readonly name: AlgorithmName;
  /** Short code used in storage keys and in the Lua dispatcher. */
  readonly code: string;
  readonly lua: string;
  check(state: S | undefined, now: number, rule: AlgorithmRule, cost: number): AlgorithmOutcome<S>;
}
