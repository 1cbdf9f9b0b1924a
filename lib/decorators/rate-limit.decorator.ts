import { SetMetadata, type ExecutionContext } from '@nestjs/common';
import type { AlgorithmName } from '../algorithms/algorithm.interface.js';
import { getAlgorithm } from '../algorithms/algorithm-registry.js';
import { MAX_HEADER_INTEGER } from '../headers/rate-limit-headers.js';
import type { RateLimitKey } from '../keys/rate-limit-key-resolver.interface.js';
import { parseDuration, parseRate, type ParsedRate } from '../rules/parse-rate.js';
import type { RateLimitCount } from '../rules/rate-limit-rule.js';
import { assertMode, assertStorageErrorPolicy } from '../rate-limit.config.js';
import type { RateLimitMode, StorageErrorPolicy } from '../rate-limit.options.js';

export const RATE_LIMIT_METADATA = 'rate-limit:limit';

/** `'10/second'`, `'10/second; 1000/day'` or `['10/second', '1000/day']`: all limits must pass. */
export type RateLimitRate = string | readonly string[];

/** Picks the rate per request, e.g. a higher one for paid plans. Results are parsed once and cached. */
export type RateLimitRateFunction = (context: ExecutionContext) => RateLimitRate | Promise<RateLimitRate>;

export interface RateLimitOptions {
  /** Who the request counts against. Defaults to the module's `key`, then the client IP. */
  key?: RateLimitKey;
  /** Routes with the same bucket share one budget. Default: one budget per controller method. */
  bucket?: string;
  /** Defaults to the module's `algorithm`, which defaults to `fixed-window`. */
  algorithm?: AlgorithmName;
  /**
   * Capacity of `token-bucket`, `leaky-bucket` and `gcra` (how many units may come at once);
   * each limit's own count when absent. Window algorithms ignore it.
   */
  burst?: number;
  /** Units one request uses, default 1: a number or a function of the request. */
  cost?: number | RateLimitCostFunction;
  /** This route's failure policy, e.g. `deny` for a login route. Defaults to the module's. */
  onStorageError?: StorageErrorPolicy;
  /**
   * Which requests keep their units (default `all`). With `failures`, a request that succeeds
   * gets its units back when its handler ends; with `successes`, one that fails. Failed: a handler
   * that threw, or on HTTP a final status of 400 or more; a client that hangs up changes nothing
   * (a client gone before the handler started gets none run: a failure). A refund never makes
   * room in a later window than the one that took the units. Admission is still decided before
   * the handler runs.
   */
  count?: RateLimitCount;
  /**
   * Once this limit denies a client, it stays denied this long, on every instance sharing the
   * storage: `'15 minutes'`, `'1 hour'`, `'30 s'`, or milliseconds.
   */
  blockFor?: string | number;
  /** `shadow`: decide and charge, but refuse nothing (see the module option). Default: the module's. */
  mode?: RateLimitMode;
  /** Whether the limit advisor follows this limit, when the module's `advisor` is on. Default true. */
  advise?: boolean;
}

export type RateLimitCostFunction = (context: ExecutionContext) => number | Promise<number>;

export interface RateLimitMetadata {
  readonly rate: readonly ParsedRate[] | RateLimitRateFunction;
  readonly options: RateLimitOptions;
  /** `blockFor` in ms, 0 for none. */
  readonly blockMs: number;
}

const COUNTS: readonly RateLimitCount[] = ['all', 'failures', 'successes'];

/** What a bucket may be called: it goes into storage keys and policy names. */
export const BUCKET_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * Limits a controller or a handler; a handler's decorator replaces its controller's.
 * A bad rate string throws here, when the class is defined, never at request time.
 */
export function RateLimit(rate: RateLimitRate | RateLimitRateFunction, options: RateLimitOptions = {}) {
  if (options.bucket !== undefined && !BUCKET_NAME.test(options.bucket)) {
    throw new Error(`@RateLimit bucket "${options.bucket}" must be 1-64 characters of A-Z a-z 0-9 _ . -`);
  }
  if (options.algorithm !== undefined) getAlgorithm(options.algorithm);
  if (options.burst !== undefined) {
    assertUnits('burst', options.burst);
    // remaining quota goes out in headers, where integers have at most 15 digits
    if (options.burst > MAX_HEADER_INTEGER) throw new Error(`@RateLimit burst must have at most 15 digits, got ${options.burst}`);
  }
  if (typeof options.cost === 'number') assertUnits('cost', options.cost);
  if (options.onStorageError !== undefined) assertStorageErrorPolicy(options.onStorageError, '@RateLimit');
  if (options.mode !== undefined) assertMode(options.mode, '@RateLimit');
  if (options.advise !== undefined && typeof options.advise !== 'boolean') {
    throw new Error(`@RateLimit advise must be true or false, got ${String(options.advise)}`);
  }
  if (options.count !== undefined && !COUNTS.includes(options.count)) {
    throw new Error(`@RateLimit count must be 'all', 'failures' or 'successes', got ${String(options.count)}`);
  }
  const metadata: RateLimitMetadata = {
    rate: typeof rate === 'function' ? rate : parseRate(rate),
    options,
    blockMs: options.blockFor === undefined ? 0 : parseDuration(options.blockFor),
  };
  return SetMetadata(RATE_LIMIT_METADATA, metadata);
}

/** Costs and bursts count whole units. */
export function assertUnits(what: 'burst' | 'cost', value: unknown): asserts value is number {
  if (!Number.isSafeInteger(value) || (value as number) < 1) {
    throw new Error(`@RateLimit ${what} must be a positive integer, got ${String(value)}`);
  }
}
