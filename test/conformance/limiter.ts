import type { AlgorithmName, RateLimitResult, RateLimitStorage } from '../../lib/index.js';
import type { RateLimitCheck } from '../../lib/storage/rate-limit-storage.interface.js';
import { bindRules } from '../../lib/rules/bind-rules.js';
import { parseRate } from '../../lib/rules/parse-rate.js';
import type { RateLimitRule } from '../../lib/rules/rate-limit-rule.js';

export interface RuleSpec {
  readonly rate: string;
  readonly algorithm: AlgorithmName;
  readonly burst?: number;
  /** `blockFor`, in ms. */
  readonly blockMs?: number;
  /** Followed by the limit advisor: every attempt is counted too. */
  readonly observed?: boolean;
}

/** Rules as the planner would bind them; one bucket per spec so rules never share a key. */
export function rulesOf(specs: readonly RuleSpec[]): RateLimitRule[] {
  return specs.flatMap((spec, i) =>
    bindRules(parseRate(spec.rate), { name: `r${i}`, bucket: `b${i}`, algorithm: spec.algorithm, burst: spec.burst, blockMs: spec.blockMs, observed: spec.observed }),
  );
}

export function keyOf(client: string, rule: RateLimitRule): string {
  return `t:{${client}}:${rule.keySuffix}`;
}

/** Checks `rules` for `client` on `storage`, always as a promise. */
/** The checks of `rules` for `client`. */
export function checksOf(rules: readonly RateLimitRule[], client: string): RateLimitCheck[] {
  return rules.map((rule) => ({ key: keyOf(client, rule), rule }));
}

export function checker(storage: RateLimitStorage, rules: readonly RateLimitRule[], client = 'client') {
  const checks = checksOf(rules, client);
  return async (cost = 1): Promise<RateLimitResult> => storage.check(checks, cost);
}

/** [allowed, remaining] of the first rule, for compact expectations. */
export function brief(result: RateLimitResult): [boolean, number] {
  return [result.allowed, result.decisions[0].remaining];
}

/** Every operation of a storage on `rules` for `client`, always as promises. */
export function operations(storage: RateLimitStorage, rules: readonly RateLimitRule[], client = 'client') {
  const checks = checksOf(rules, client);
  return {
    check: async (cost = 1): Promise<RateLimitResult> => storage.check(checks, cost),
    peek: async (cost = 1): Promise<RateLimitResult> => storage.peek!(checks, cost),
    reward: async (units = 1): Promise<RateLimitResult> => storage.adjust!(checks, -units),
    penalize: async (units = 1): Promise<RateLimitResult> => storage.adjust!(checks, units),
    /** Gives back what a check admitted at `chargedAt` (its result's `chargedAt`) took. */
    refund: async (cost: number, chargedAt: number): Promise<void> => storage.refund!(checks, cost, chargedAt),
    reset: async (): Promise<void> => storage.reset!(checks),
    block: async (ms: number): Promise<void> => storage.block!(checks, ms),
  };
}

/** The first rule's [allowed, remaining, retryAfterMs], for compact expectations. */
export function verdict(result: RateLimitResult): [boolean, number, number] {
  const first = result.decisions[0];
  return [result.allowed, first.remaining, first.retryAfterMs];
}
