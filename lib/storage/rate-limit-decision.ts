import type { RateLimitRule } from '../rules/rate-limit-rule.js';

/** One rule's answer for one request. Headers and the 429 filter read only these fields. */
export interface RateLimitDecision {
  readonly rule: RateLimitRule;
  readonly allowed: boolean;
  readonly limit: number;
  /** Quota left after this request (not charged if the check as a whole was denied). */
  readonly remaining: number;
  /** 0 when allowed; otherwise ms until the request would pass: `Infinity` if its cost exceeds the rule's capacity. */
  readonly retryAfterMs: number;
  /** ms until the quota is fully restored. */
  readonly resetMs: number;
  /**
   * For a rule the limit advisor follows (`rule.observed`): units the client has attempted in
   * the rule's current fixed window (aligned on the epoch), this request included, admitted or
   * not; undefined otherwise, or when the storage does not count attempts.
   */
  readonly attempts?: number;
}

/** The answer for a whole check: admitted only if every rule admits it. */
export interface RateLimitResult {
  readonly allowed: boolean;
  /** When the decision was made, in ms since the epoch (for Redis: when the app sent the check). */
  readonly now: number;
  /**
   * The storage's own clock when it decided (Redis: the server's, unless a clock was injected):
   * what `RateLimitStorage.refund` needs to give an admitted check's units back where they were
   * taken. Absent from a denial the block cache answered.
   */
  readonly chargedAt?: number;
  /**
   * One decision per checked rule, in the order given; except for a denial served from
   * RedisStorage's block cache, which carries only the rule that blocks.
   */
  readonly decisions: readonly RateLimitDecision[];
}

/** One rule's raw verdict, before rounding and before the other rules are known. */
export interface RawOutcome {
  readonly allowed: boolean;
  readonly remaining: number;
  readonly retryAfterMs: number;
  readonly resetMs: number;
}

/**
 * Turns raw per-rule outcomes into the result every storage returns, so memory and Redis
 * round and settle the all-or-nothing case in exactly one place.
 */
export function settleCheck(
  rules: readonly { readonly rule: RateLimitRule }[],
  now: number,
  cost: number,
  outcomes: readonly RawOutcome[],
  /** False for a peek: then `remaining` is what is left now, every rule uncharged. */
  charged = true,
  /** The storage's clock when it decided, if it differs from `now` (Redis's). */
  chargedAt = now,
  /** Per rule, the attempts counted for an observed rule (see `RateLimitDecision.attempts`). */
  attempts?: readonly (number | undefined)[],
): RateLimitResult {
  let allowed = true;
  for (let i = 0; i < rules.length; i++) allowed &&= outcomes[i].allowed;
  const decisions: RateLimitDecision[] = new Array(rules.length);
  for (let i = 0; i < rules.length; i++) {
    const { rule } = rules[i];
    const outcome = outcomes[i];
    // A rule that would have admitted the request was not charged when another rule denied it.
    const left = outcome.allowed && (!allowed || !charged) ? outcome.remaining + cost : outcome.remaining;
    let wait = 0;
    if (!outcome.allowed) wait = cost > rule.capacity ? Infinity : Math.max(0, Math.ceil(outcome.retryAfterMs));
    decisions[i] = {
      rule,
      allowed: outcome.allowed,
      limit: rule.limit,
      remaining: Math.max(0, Math.floor(left)),
      retryAfterMs: wait,
      resetMs: Math.max(0, Math.ceil(outcome.resetMs)),
      attempts: attempts?.[i],
    };
  }
  return { allowed, now, chargedAt, decisions };
}
