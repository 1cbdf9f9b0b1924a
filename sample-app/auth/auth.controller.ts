import { Body, Controller, HttpCode, Post, UnauthorizedException } from '@nestjs/common';
import { RateLimit } from '../../lib/index.js';
import type { User } from '../users/user.interface.js';
import { UsersService } from '../users/users.service.js';

/** `POST /auth/login` body. Demo accounts: fiona / free-password and paul / paid-password. */
interface LoginBody {
  username?: unknown;
  password?: unknown;
}

@Controller('auth')
export class AuthController {
  constructor(private readonly users: UsersService) {}

  /**
   * Returns the bearer token to call the API with. 5/minute per IP slows password guessing;
   * failed attempts count too, since the guard charges the request before the handler runs.
   */
  @Post('login')
  @HttpCode(200)
  @RateLimit('5/minute')
  login(@Body() body: LoginBody = {}): { token: string; tokenType: 'Bearer'; user: User } {
    const session = this.users.login(body.username, body.password);
    if (!session) throw new UnauthorizedException('Invalid username or password');
    return { token: session.token, tokenType: 'Bearer', user: session.user };
  }
}
