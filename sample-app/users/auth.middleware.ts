import { Injectable, type NestMiddleware } from '@nestjs/common';
import type { UserRequest } from './user.interface.js';
import { UsersService } from './users.service.js';

/**
 * Sets `req.user` for a known bearer token. A middleware, not a guard, because the global
 * rate-limit guard runs before any controller guard and its key functions need the user.
 * On Fastify, `req` is the raw Node request: read the user with `requestUser()`.
 */
@Injectable()
export class AuthMiddleware implements NestMiddleware {
  constructor(private readonly users: UsersService) {}

  use(req: UserRequest, _res: unknown, next: () => void): void {
    const user = this.users.findByAuthorization(req.headers.authorization);
    // Unknown tokens stay anonymous: no route here needs a user, they only get a bigger budget.
    if (user) req.user = user;
    next();
  }
}
