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

/** Numbers per key in the memory storage: when the state expires, then up to three of its own. */
export const STATE_STRIDE = 4;

/**
 * One rule's verdict on one request, and the state to store if the whole check is admitted.
 * Reused from check to check, so deciding allocates nothing.
 */
export class AlgorithmOutcome {
  allowed = false;
  /** Quota left after this request if admitted; the quota left now if denied. May be fractional. */
  remaining = 0;
  /** 0 when allowed; otherwise how long until the same request would pass. */
  retryAfterMs = 0;
  /** How long until the quota is fully restored. */
  resetMs = 0;
  /** From then on the stored state is the same as none. */
  expiresAt = 0;
  a = 0;
  b = 0;
  c = 0;
}

/**
 * One algorithm: its in-memory arithmetic and, in `lua`, the same arithmetic for Redis.
 *
 * Memory: `check` reads the key's state at `state[at..at+3]` (`at` is -1 when there is none, or it
 * expired) and fills `out`, writing nothing; the storage stores `out` if every rule admits.
 *
 * Redis: `lua` is a Lua expression whose value is a `function(key, now, limit, window, burst, cost)`
 * returning `allowed (0|1), remaining, retryAfterMs, resetMs, commit, a, b, c`; `commit(key, a, b, c)`
 * writes (a shared function such as the prelude's `set_state`, not a closure per check).
 *
 * `adjust` and `luaAdjust` (`function(key, now, limit, window, burst, units)`, which writes) charge
 * `units` whatever the limit, or give `-units` back when negative, never past a fresh state.
 *
 * `refund` and `luaRefund` (`function(key, now, limit, window, burst, cost, charged_at)`, which
 * writes) give back what a check admitted at `charged_at` took, as far as it still counts: a
 * window's units only in the window that took them (the log: the very entry), a bucket's only
 * the part that has not drained since. A refund never makes room the charge did not take.
 *
 * Both halves evaluate the same expressions in the same order on IEEE doubles, and Lua stores
 * state as packed doubles (`struct.pack`) or as digits that read back as the same doubles, so
 * they agree to the bit. The conformance suite holds them to it.
 */
export interface RateLimitAlgorithm {
  readonly name: AlgorithmName;
  /** Short code used in storage keys and in the Lua dispatcher. */
  readonly code: string;
  /** Whether capacity is `burst` (bucket-like) rather than `limit` (window-like). */
  readonly usesBurst: boolean;
  readonly lua: string;
  readonly luaAdjust: string;
  check(state: Float64Array, at: number, now: number, rule: AlgorithmRule, cost: number, out: AlgorithmOutcome, log?: number[]): void;
  /**
   * Fills `out` with the state after charging `units` (or refunding `-units`); `out.expiresAt <= now`
   * means the state is now the same as none. A list-based algorithm edits `log` in place instead.
   */
  adjust(state: Float64Array, at: number, now: number, rule: AlgorithmRule, units: number, out: AlgorithmOutcome, log?: number[]): void;
  /**
   * Fills `out` with the state once `cost` units charged at `chargedAt` (the storage's clock when
   * it admitted them) are given back, as far as they still count; a list-based algorithm edits
   * `log` in place instead. False when nothing of the charge counts any more: the state stays.
   */
  refund(state: Float64Array, at: number, now: number, rule: AlgorithmRule, cost: number, chargedAt: number, out: AlgorithmOutcome, log?: number[]): boolean;
  readonly luaRefund: string;
  /** For algorithms whose state is a list (one entry per unit) rather than numbers. */
  readonly log?: {
    /** Applies an admitted `out` to the key's list. */
    commit(log: number[], now: number, cost: number, out: AlgorithmOutcome): void;
  };
}
