import { ServerResponse } from 'node:http';
import { Catch, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { RateLimitExceededException } from '../exceptions/rate-limit-exceeded.exception.js';
import { RateLimitUnavailableException } from '../exceptions/rate-limit-unavailable.exception.js';

/**
 * Answers a denied request: 429, `Retry-After`, the rate-limit headers and a JSON body. A request
 * that costs more than a limit can ever admit gets no `Retry-After`: waiting would not help.
 * Under the `deny` failure policy, a storage outage answers 503 with `Retry-After`.
 *
 * A Node response (Express) is answered directly: Express's `send` would hash the body for an
 * ETag and check freshness, which mean nothing for a refusal and cost more than the rest of it.
 * Other platforms (Fastify) answer through Nest's HTTP adapter.
 */
@Catch(RateLimitExceededException, RateLimitUnavailableException)
export class RateLimitExceptionFilter implements ExceptionFilter<RateLimitExceededException | RateLimitUnavailableException> {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(exception: RateLimitExceededException | RateLimitUnavailableException, host: ArgumentsHost): void {
    const response: unknown = host.switchToHttp().getResponse();
    if (response instanceof ServerResponse) return answerDirectly(response, exception);
    const adapter = this.adapterHost.httpAdapter;
    for (const [name, value] of exception.headers) adapter.setHeader(response, name, value);
    if (exception.retryAfter !== null) adapter.setHeader(response, 'Retry-After', String(exception.retryAfter));
    adapter.reply(response, exception.getResponse(), exception.getStatus());
  }
}

function answerDirectly(response: ServerResponse, exception: RateLimitExceededException | RateLimitUnavailableException): void {
  if (response.headersSent) return;
  const body = JSON.stringify(exception.getResponse());
  const headers: string[] = [];
  for (const [name, value] of exception.headers) headers.push(name, value);
  if (exception.retryAfter !== null) headers.push('Retry-After', String(exception.retryAfter));
  headers.push('Content-Type', 'application/json; charset=utf-8', 'Content-Length', String(Buffer.byteLength(body)));
  // Node leaves out the body of a HEAD response by itself.
  response.writeHead(exception.getStatus(), headers);
  response.end(body);
}
