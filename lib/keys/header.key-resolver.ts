import type { ExecutionContext } from '@nestjs/common';
import { rateLimitRequest } from '../contexts/context-adapters.js';
import type { RateLimitKeyResolver } from './rate-limit-key-resolver.interface.js';

/**
 * Keys by a request header, `x-api-key` unless told otherwise: `new HeaderKeyResolver('x-tenant')`.
 * A missing header falls back to the client IP. Long or odd values are hashed before storage.
 * Works wherever the request-like object has headers: HTTP, GraphQL, the socket.io handshake.
 */
export class HeaderKeyResolver implements RateLimitKeyResolver {
  private readonly header: string;

  constructor(header = 'x-api-key') {
    this.header = header.toLowerCase();
  }

  resolve(context: ExecutionContext): string | undefined {
    const request = rateLimitRequest<{ headers?: Record<string, string | string[] | undefined> } | undefined>(context);
    const raw = request?.headers?.[this.header];
    const value = Array.isArray(raw) ? raw[0] : raw;
    return value ? `${this.header}:${value}` : undefined;
  }
}
