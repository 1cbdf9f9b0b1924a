import type { ExecutionContext } from '@nestjs/common';
import { rateLimitRequest } from '../contexts/context-adapters.js';
import { PrefixedKeyResolver } from './prefixed-key-resolver.js';

/**
 * Keys by the authenticated user, `req.user.id` unless told otherwise: `new UserKeyResolver('sub')`.
 * Anonymous requests fall back to the client IP. Needs whatever sets `req.user` to run first
 * (a middleware, since global guards run before controller guards).
 */
export class UserKeyResolver extends PrefixedKeyResolver {
  readonly prefix = 'user';

  constructor(private readonly property = 'id') {
    super();
  }

  value(context: ExecutionContext): string | undefined {
    const user = rateLimitRequest<{ user?: Record<string, unknown> | null } | undefined>(context)?.user;
    const id = user?.[this.property];
    return id === undefined || id === null ? undefined : String(id);
  }
}
