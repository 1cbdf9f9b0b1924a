import { Body, Controller, HttpCode, Logger, Post, Req, UnauthorizedException } from '@nestjs/common';
import { RateLimit, RateLimitService } from '../../lib/index.js';
import { ipKey, type AddressedRequest } from '../client-key.js';
import type { User } from '../users/user.interface.js';
import { UsersService } from '../users/users.service.js';

/** `POST /auth/login` body. Demo accounts: fiona / free-password and paul / paid-password. */
interface LoginBody {
  username?: unknown;
  password?: unknown;
}

/** The budget of failed logins, named so that the handler can reset it. */
export const LOGIN_BUCKET = 'login';

@Controller('auth')
export class AuthController {
  private readonly logger = new Logger(AuthController.name);

  constructor(
    private readonly users: UsersService,
    private readonly rateLimits: RateLimitService,
  ) {}

  /**
   * Returns the bearer token to call the API with. Brute-force protection, per client IP:
   * - only failed attempts count (`count: 'failures'`: a 2xx gives its unit back), 5 a minute;
   * - a successful login forgets the IP's failed attempts;
   * - the attempt after the 5th failure locks the IP out for 15 minutes (`blockFor`), on every
   *   instance, even with the right password.
   */
  @Post('login')
  @HttpCode(200)
  @RateLimit('5/minute', { bucket: LOGIN_BUCKET, count: 'failures', blockFor: '15 minutes' })
  async login(@Body() body: LoginBody = {}, @Req() request: AddressedRequest): Promise<{ token: string; tokenType: 'Bearer'; user: User }> {
    const session = this.users.login(body.username, body.password);
    if (!session) throw new UnauthorizedException('Invalid username or password');
    await this.forgetFailedAttempts(request);
    return { token: session.token, tokenType: 'Bearer', user: session.user };
  }

  /**
   * The route counts by IP (the default key), so the identity is the IP's: see {@link ipKey}.
   * A storage outage must not turn a good password into an error: the attempts then expire with
   * their minute instead.
   */
  private async forgetFailedAttempts(request: AddressedRequest): Promise<void> {
    try {
      await this.rateLimits.reset(ipKey(request), LOGIN_BUCKET);
    } catch (error) {
      this.logger.warn(`Could not reset the failed logins of a client: ${(error as Error).message}`);
    }
  }
}
