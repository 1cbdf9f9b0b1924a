import { Catch, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { RateLimitExceededException } from '../exceptions/rate-limit-exceeded.exception.js';
import { RateLimitUnavailableException } from '../exceptions/rate-limit-unavailable.exception.js';

/**
 * Answers a denied request: 429, `Retry-After`, the rate-limit headers and a JSON body. A request
 * that costs more than a limit can ever admit gets no `Retry-After`: waiting would not help.
 * Under the `deny` failure policy, a storage outage answers 503 with `Retry-After`.
 */
@Catch(RateLimitExceededException, RateLimitUnavailableException)
export class RateLimitExceptionFilter implements ExceptionFilter<RateLimitExceededException | RateLimitUnavailableException> {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(exception: RateLimitExceededException | RateLimitUnavailableException, host: ArgumentsHost): void {
    const adapter = this.adapterHost.httpAdapter;
    const response = host.switchToHttp().getResponse();
    for (const [name, value] of exception.headers) adapter.setHeader(response, name, value);
    if (exception.retryAfter !== null) adapter.setHeader(response, 'Retry-After', String(exception.retryAfter));
    adapter.reply(response, exception.getResponse(), exception.getStatus());
  }
}
