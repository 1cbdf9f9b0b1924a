import type { RateLimitRule } from '../rules/rate-limit-rule.js';

/**
 * The policy of a `@ConcurrencyLimit`, as a denial's `details.rule` reports it: shaped like a
 * {@link RateLimitRule} so code that reads refusals reads both alike, and told apart by
 * `algorithm: 'concurrency'`. No storage ever checks it.
 */
export interface ConcurrencyRule extends Omit<RateLimitRule, 'algorithm' | 'windowMs'> {
  readonly algorithm: 'concurrency';
  /** A concurrency limit has no window: slots come back when requests end. */
  readonly windowMs: 0;
}

/** A denied request may retry soon: a slot comes back whenever a request in flight ends. */
export const CONCURRENCY_RETRY_AFTER_MS = 1_000;

/** The rule of `limit` slots named `name` (the bucket), under `<bucket>:cc` after the client's hash tag. */
export function concurrencyRule(name: string, bucket: string, limit: number): ConcurrencyRule {
  const rule = {
    name,
    text: `${limit} concurrent`,
    limit,
    windowMs: 0 as const,
    algorithm: 'concurrency' as const,
    burst: limit,
    capacity: limit,
    keySuffix: `${bucket}:cc`,
    blockMs: 0,
    count: 'all' as const,
  };
  return rule;
}
