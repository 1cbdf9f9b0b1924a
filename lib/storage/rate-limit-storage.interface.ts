import type { RateLimitRule } from '../rules/rate-limit-rule.js';
import type { RateLimitResult } from './rate-limit-decision.js';

/** Injection token of the storage the guard uses. */
export const RATE_LIMIT_STORAGE = Symbol('RATE_LIMIT_STORAGE');

/** One rule to check, and the storage key of the client's state for it. */
export interface RateLimitCheck {
  readonly key: string;
  readonly rule: RateLimitRule;
}

/**
 * Where limiter state lives. `check` decides every rule of one request in one call (one round
 * trip for a remote store), all or nothing: a denied request charges none of the rules.
 * Return synchronously when you can; the guard awaits only what is a promise.
 */
export interface RateLimitStorage {
  check(checks: readonly RateLimitCheck[], cost: number): RateLimitResult | Promise<RateLimitResult>;
  /**
   * A denial this process already knows of, without asking the store (RedisStorage's block
   * cache), or undefined. The guard asks it first, even while the circuit breaker is open, and
   * its answers say nothing of the store's health.
   */
  cachedDenial?(checks: readonly RateLimitCheck[], cost: number): RateLimitResult | undefined;
  /** Connects, if the storage needs to. The module awaits it once, at start-up. */
  init?(): void | Promise<void>;
  /** Releases only what the storage opened itself. The module calls it on application shutdown. */
  close?(): void | Promise<void>;
}
