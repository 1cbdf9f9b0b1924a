import type { ExecutionContext } from '@nestjs/common';
import type { RateLimitMode, StorageErrorPolicy } from '../rate-limit.options.js';
import type { MaybePromise } from '../utils/maybe-async.js';
import type { RateLimitCheck } from '../storage/rate-limit-storage.interface.js';
import type { RateLimitCount } from './rate-limit-rule.js';
import type { RuleSet } from './rule-set.js';

/** Everything the guard needs for one route, built on its first request and kept. */
export interface RoutePlan {
  /** `@SkipRateLimit()`, or no limit applies at all. */
  readonly exempt: boolean;
  readonly ruleSet: (context: ExecutionContext) => MaybePromise<RuleSet>;
  /** Units this request uses: a constant, or computed per request. */
  readonly cost: number | ((context: ExecutionContext) => MaybePromise<number>);
  /** What to do when the storage cannot answer. */
  readonly onStorageError: StorageErrorPolicy;
  /** `shadow`: denials are reported, not refused. */
  readonly mode: RateLimitMode;
  /** Which outcomes keep their units: `all`, or only `failures` or `successes` (the others are refunded). */
  readonly count: RateLimitCount;
  /** Who the request counts against: the key resolver's answer, or `ip:<address>`. */
  readonly identify: (context: ExecutionContext) => MaybePromise<string>;
  /**
   * The common case in one step, when the rules are fixed and the key resolver is built in (or
   * the client IP): the request's checks, found by the resolver's value (RuleSet.byValue).
   */
  readonly quick?: {
    readonly rules: RuleSet;
    readonly checks: (context: ExecutionContext) => readonly RateLimitCheck[];
  };
}
