import type { AlgorithmName } from '../algorithms/algorithm.interface.js';

/** `all`: every admitted request keeps its units; `failures` or `successes`: only those do. */
export type RateLimitCount = 'all' | 'failures' | 'successes';

/** A limit bound to its algorithm and its place in storage, built once at start-up. */
export interface RateLimitRule {
  /** Policy name shown in the `RateLimit-Policy` header, e.g. `"QuotesController.getQuote"`. */
  readonly name: string;
  /** The rate as written, e.g. `100/minute`. */
  readonly text: string;
  readonly limit: number;
  readonly windowMs: number;
  readonly algorithm: AlgorithmName;
  /** Capacity for bucket-like algorithms; `limit` unless configured. */
  readonly burst: number;
  /** The most one request may cost: `burst` for bucket-like algorithms, `limit` otherwise. */
  readonly capacity: number;
  /** Storage key after the client's hash tag: `<bucket>:<algorithm code><window>`. */
  readonly keySuffix: string;
  /** How long a client this rule denies stays denied (`blockFor`); 0 for no block. */
  readonly blockMs: number;
  /** Which outcomes keep their units: the others get them back when the request ends. */
  readonly count: RateLimitCount;
  /**
   * Whether the limit advisor follows this rule: the storage then also counts every attempt in
   * the rule's window, admitted or not, and answers the count in `RateLimitDecision.attempts`.
   */
  readonly observed?: boolean;
}
