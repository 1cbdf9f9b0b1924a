import { Catch, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import { contextAdapterFor } from '../contexts/context-adapters.js';
import { RateLimitExceededException } from '../exceptions/rate-limit-exceeded.exception.js';
import { RateLimitUnavailableException } from '../exceptions/rate-limit-unavailable.exception.js';
import { ClientClosedRequestException } from '../outcomes/client-closed-request.exception.js';

/**
 * Answers a refusal in its transport's form, through the context's adapter: on HTTP a 429 with
 * `Retry-After`, the rate-limit headers and a JSON body (503 under the `deny` failure policy); a
 * GraphQL error, a WebSocket `exception` event, or a failed RPC reply elsewhere. A request that
 * costs more than a limit can ever admit gets no `Retry-After`: waiting would not help.
 */
@Catch(RateLimitExceededException, RateLimitUnavailableException, ClientClosedRequestException)
export class RateLimitExceptionFilter implements ExceptionFilter<RateLimitExceededException | RateLimitUnavailableException | ClientClosedRequestException> {
  catch(exception: RateLimitExceededException | RateLimitUnavailableException | ClientClosedRequestException, host: ArgumentsHost): unknown {
    // a client gone before its handler started: there is nobody to answer
    if (exception instanceof ClientClosedRequestException) return host.getType() === 'http' || host.getType() === 'ws' ? undefined : exception;
    const adapter = contextAdapterFor(host.getType());
    if (adapter === undefined) throw exception;
    return adapter.refuse(exception, host);
  }
}
