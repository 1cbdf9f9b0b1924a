import type { CanActivate, ExecutionContext } from '@nestjs/common';
import type { RateLimitInterceptor } from '../interceptors/rate-limit.interceptor.js';
import type { MaybePromise } from '../utils/maybe-async.js';

/**
 * The last guard of an `@Sse()` route under `@ConcurrencyLimit`: takes its slot before the stream
 * starts, so a refusal is a 429 and not an error inside a stream already answered 200 (see
 * RateLimitInterceptor.takeSlotEarly). Bound by bindRateLimitInterceptor, to those routes only.
 */
export class StreamSlotGuard implements CanActivate {
  constructor(private readonly interceptor: RateLimitInterceptor) {}

  canActivate(context: ExecutionContext): MaybePromise<boolean> {
    return this.interceptor.takeSlotEarly(context);
  }
}
