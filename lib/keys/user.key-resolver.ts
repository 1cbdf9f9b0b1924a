import type { ExecutionContext } from '@nestjs/common';
import { rateLimitRequest } from '../contexts/context-adapters.js';
import type { RateLimitKeyResolver } from './rate-limit-key-resolver.interface.js';

/**
 * Keys by the authenticated user, `req.user.id` unless told otherwise: `new UserKeyResolver('sub')`.
 * Anonymous requests fall back to the client IP. Needs whatever sets `req.user` to run first
 * (a middleware, since global guards run before controller guards).
 */
export class UserKeyResolver implements RateLimitKeyResolver {
  constructor(private readonly property = 'id') {}

  resolve(context: ExecutionContext): string | undefined {
    const user = rateLimitRequest<{ user?: Record<string, unknown> | null } | undefined>(context)?.user;
    const id = user?.[this.property];
    return id === undefined || id === null || id === '' ? undefined : `user:${String(id)}`;
  }
}
