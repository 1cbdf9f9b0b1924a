import { mostConstraining, rateLimitHeaders } from '../headers/rate-limit-headers.js';
import type { RateLimitConfig } from '../rate-limit.config.js';
import type { RateLimitResult } from '../storage/rate-limit-decision.js';
import { RateLimitExceededException } from './rate-limit-exceeded.exception.js';
import { withoutStack } from './without-stack.js';

/**
 * The refusal of a denied check, as the guard throws it and `RateLimitService.enforce` too: its
 * most constraining rule, the rate-limit headers of `policy` in the module's header mode, and
 * the module's message and body.
 */
export function denial(config: RateLimitConfig, result: RateLimitResult, policy: string, cost: number): RateLimitExceededException {
  const headers = rateLimitHeaders(config.headers, result, policy);
  const worst = mostConstraining(result.decisions);
  const details = {
    rule: worst.rule,
    limit: worst.limit,
    remaining: worst.remaining,
    retryAfterMs: worst.retryAfterMs,
    resetMs: worst.resetMs,
    resetAt: result.now + worst.resetMs,
    cost,
  };
  const message =
    worst.retryAfterMs === Infinity
      ? `${config.errorMessage}: this request costs ${cost}, more than the ${worst.rule.capacity} that "${worst.rule.name}" can ever admit`
      : config.errorMessage;
  const problem = config.problemDetails ? { violatedPolicies: result.decisions.filter((d) => !d.allowed).map((d) => d.rule.name) } : undefined;
  return withoutStack(() => new RateLimitExceededException(details, message, headers, problem));
}
