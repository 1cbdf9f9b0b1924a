import { HttpException, HttpStatus } from '@nestjs/common';
import { headerSeconds } from '../headers/rate-limit-headers.js';
import { JSON_CONTENT_TYPE, PROBLEM_CONTENT_TYPE, QUOTA_EXCEEDED_TYPE, type ProblemDetailsRequest } from './problem-details.js';
import type { RateLimitRule } from '../rules/rate-limit-rule.js';
import type { ConcurrencyRule } from '../concurrency/concurrency-rule.js';

export interface RateLimitExceededDetails {
  /**
   * The rule that denied the request (the one that waits longest when several did), or the
   * `@ConcurrencyLimit` policy (`algorithm: 'concurrency'`) for a request refused a slot.
   */
  readonly rule: RateLimitRule | ConcurrencyRule;
  readonly limit: number;
  readonly remaining: number;
  /** `Infinity` when the request costs more than the rule can ever admit. */
  readonly retryAfterMs: number;
  /** ms until the rule's quota is fully restored. */
  readonly resetMs: number;
  /** When the rule's quota is fully restored, in ms since the epoch. */
  readonly resetAt: number;
  /** Units the request would have used. */
  readonly cost: number;
}

/** Thrown by the guard for a denied request; {@link RateLimitExceptionFilter} turns it into a 429. */
export class RateLimitExceededException extends HttpException {
  /** What other transports than HTTP report: `{ status: 'error', code, message, retryAfter }`. */
  readonly code = 'RATE_LIMITED';
  /** Whole seconds to wait, at least 1: the `Retry-After` value. `null` if waiting cannot help. */
  readonly retryAfter: number | null;
  /** Of the HTTP body: JSON, or problem details (RFC 9457) when the module's `problemDetails` is on. */
  readonly contentType: string;

  constructor(
    readonly details: RateLimitExceededDetails,
    message = 'Rate limit exceeded',
    /** Rate-limit headers to send with the 429. */
    readonly headers: readonly [string, string][] = [],
    /** A problem-details body instead of the default one. */
    problem?: ProblemDetailsRequest,
  ) {
    const retryAfter = Number.isFinite(details.retryAfterMs) ? Math.max(1, headerSeconds(details.retryAfterMs)) : null;
    super(
      problem === undefined
        ? { statusCode: HttpStatus.TOO_MANY_REQUESTS, error: 'Too Many Requests', message, retryAfter }
        : {
            type: QUOTA_EXCEEDED_TYPE,
            title: 'Too Many Requests',
            status: HttpStatus.TOO_MANY_REQUESTS,
            detail: message,
            'violated-policies': problem.violatedPolicies,
            retryAfter,
          },
      HttpStatus.TOO_MANY_REQUESTS,
    );
    this.retryAfter = retryAfter;
    this.contentType = problem === undefined ? JSON_CONTENT_TYPE : PROBLEM_CONTENT_TYPE;
  }
}
