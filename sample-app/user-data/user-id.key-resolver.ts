import { Injectable, type ExecutionContext } from '@nestjs/common';
import type { RateLimitKeyResolver } from '../../lib/index.js';
import type { UserRequest } from '../users/user.interface.js';
import { UsersService } from '../users/users.service.js';

/**
 * One budget per user for a known bearer token, the client IP otherwise. A provider, so the
 * library resolves it through DI and it can look the token up itself instead of trusting req.user.
 */
@Injectable()
export class UserIdKeyResolver implements RateLimitKeyResolver {
  constructor(private readonly users: UsersService) {}

  resolve(context: ExecutionContext): string | undefined {
    const request = context.switchToHttp().getRequest<UserRequest>();
    const user = this.users.findByAuthorization(request.headers.authorization);
    return user ? `user:${user.id}` : undefined;
  }
}
