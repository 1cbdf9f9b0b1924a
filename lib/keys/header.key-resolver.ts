import type { ExecutionContext } from '@nestjs/common';
import { rateLimitRequest } from '../contexts/context-adapters.js';
import { PrefixedKeyResolver } from './prefixed-key-resolver.js';

/**
 * Keys by a request header, `x-api-key` unless told otherwise: `new HeaderKeyResolver('x-tenant')`.
 * A missing header falls back to the client IP. Long or odd values are hashed before storage.
 * Works wherever the request-like object has headers: HTTP, GraphQL, the socket.io handshake.
 */
export class HeaderKeyResolver extends PrefixedKeyResolver {
  readonly prefix: string;

  constructor(header = 'x-api-key') {
    super();
    this.prefix = header.toLowerCase();
  }

  value(context: ExecutionContext): string | undefined {
    const request = rateLimitRequest<{ headers?: Record<string, string | string[] | undefined> } | undefined>(context);
    const raw = request?.headers?.[this.prefix];
    return Array.isArray(raw) ? raw[0] : raw;
  }
}
