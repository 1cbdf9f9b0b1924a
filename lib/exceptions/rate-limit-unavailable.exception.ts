import { HttpException, HttpStatus } from '@nestjs/common';
import { headerSeconds } from '../headers/rate-limit-headers.js';
import { JSON_CONTENT_TYPE, PROBLEM_CONTENT_TYPE } from './problem-details.js';

/**
 * Thrown under the `deny` failure policy when the storage cannot answer: a 503, not a 429 (the
 * client did nothing wrong) and not a 500 (the failure is known and temporary).
 */
export class RateLimitUnavailableException extends HttpException {
  /** What other transports than HTTP report: `{ status: 'error', code, message, retryAfter }`. */
  readonly code = 'STORAGE_UNAVAILABLE';
  /** Whole seconds to wait, at least 1: the `Retry-After` value. */
  readonly retryAfter: number;
  readonly headers: readonly [string, string][] = [];
  /** Of the HTTP body: JSON, or problem details (RFC 9457) when the module's `problemDetails` is on. */
  readonly contentType: string;

  constructor(retryAfterMs: number, message = 'Rate limiting is temporarily unavailable', problemDetails = false) {
    const retryAfter = Math.max(1, headerSeconds(retryAfterMs));
    super(
      problemDetails
        ? { type: 'about:blank', title: 'Service Unavailable', status: HttpStatus.SERVICE_UNAVAILABLE, detail: message, retryAfter }
        : { statusCode: HttpStatus.SERVICE_UNAVAILABLE, error: 'Service Unavailable', message, retryAfter },
      HttpStatus.SERVICE_UNAVAILABLE,
    );
    this.retryAfter = retryAfter;
    this.contentType = problemDetails ? PROBLEM_CONTENT_TYPE : JSON_CONTENT_TYPE;
  }
}
