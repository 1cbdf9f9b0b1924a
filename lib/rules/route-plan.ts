import type { ExecutionContext } from '@nestjs/common';
import type { StorageErrorPolicy } from '../rate-limit.options.js';
import type { MaybePromise } from '../utils/maybe-async.js';
import type { RateLimitRule } from './rate-limit-rule.js';

/** The rules checked together for one request, with their `RateLimit-Policy` value built once. */
export interface RuleSet {
  readonly rules: readonly RateLimitRule[];
  readonly policy: string;
}

/** Everything the guard needs for one route, built on its first request and kept. */
export interface RoutePlan {
  /** `@SkipRateLimit()`, or no limit applies at all. */
  readonly exempt: boolean;
  readonly ruleSet: (context: ExecutionContext) => MaybePromise<RuleSet>;
  /** Units this request uses: a constant, or computed per request. */
  readonly cost: number | ((context: ExecutionContext) => MaybePromise<number>);
  /** What to do when the storage cannot answer. */
  readonly onStorageError: StorageErrorPolicy;
  /** The storage key base of the client: `<prefix>:{<identity>}:`. */
  readonly keyBase: (context: ExecutionContext) => MaybePromise<string>;
}
