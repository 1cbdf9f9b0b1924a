import type { AlgorithmName } from '../algorithms/algorithm.interface.js';
import type { RateLimitRate } from '../decorators/rate-limit.decorator.js';
import type { RateLimitDecision } from '../storage/rate-limit-decision.js';

/**
 * The limit a {@link RateLimitService} call applies to:
 * - a bucket name (`'login'`, or `'QuotesController.getQuote'` for a route without one): the
 *   rules of the decorated routes that use it;
 * - a rate (`'5/minute'`, `'10/second; 1000/day'`, or an array), kept under a bucket named after it;
 * - or both spelled out, with the decorator's options.
 * A string with a `/` or the word `per` is a rate; any other string is a bucket.
 */
export type RateLimitTarget = string | readonly string[] | RateLimitTargetOptions;

export interface RateLimitTargetOptions {
  /** The rate; when absent, that of the decorated routes using `bucket`. */
  readonly rate?: RateLimitRate;
  /** Where the state lives: the same bucket as a route means the same budget. */
  readonly bucket?: string;
  /** Default: the bucket's routes' algorithm, else the module's. */
  readonly algorithm?: AlgorithmName;
  readonly burst?: number;
  /** Once this limit denies the identity, it stays denied this long (`'15 minutes'`, or ms). Default: the bucket's routes'. */
  readonly blockFor?: string | number;
}

/** A client's standing on one limit: the most constraining of its rules, and each rule's. */
export interface RateLimitStatus {
  readonly allowed: boolean;
  readonly limit: number;
  readonly remaining: number;
  /** 0 when allowed; `Infinity` if the cost exceeds what the limit can ever admit. */
  readonly retryAfterMs: number;
  /** ms until the quota is fully restored. */
  readonly resetMs: number;
  /** When the quota is fully restored, in ms since the epoch. */
  readonly resetAt: number;
  readonly decisions: readonly RateLimitDecision[];
}
