import { Body, Controller, HttpCode, Logger, Post, Req, UnauthorizedException } from '@nestjs/common';
import { RateLimit, RateLimitService, type RateLimitTargetOptions } from '../../lib/index.js';
import { ipKey, type AddressedRequest } from '../client-key.js';
import type { User } from '../users/user.interface.js';
import { UsersService } from '../users/users.service.js';

/** `POST /auth/login` body. Demo accounts: fiona / free-password and paul / paid-password. */
interface LoginBody {
  username?: unknown;
  password?: unknown;
}

/** The route's own limit: failed logins per client IP, whatever the account. Never forgiven. */
export const LOGIN_IP_BUCKET = 'login-ip';

/**
 * Failed logins per account and client IP, counted by the handler (only it reads the username).
 * No decorated route uses this bucket, so every call names its rate: the same object for
 * `enforce` and `reset`, so both address the same state.
 */
export const LOGIN_ACCOUNT_LIMIT = { bucket: 'login', rate: '5/minute', blockFor: '15 minutes' } as const satisfies RateLimitTargetOptions;
/** The bucket of {@link LOGIN_ACCOUNT_LIMIT}. */
export const LOGIN_BUCKET = LOGIN_ACCOUNT_LIMIT.bucket;

/**
 * Who the per-account limit counts: this client IP (as the guard reads it, see {@link ipKey})
 * trying this username, e.g. `ip:203.0.113.7|user:paul`. The library hashes it in storage keys.
 *
 * The username is trimmed and lowercased. The account lookup matches names exactly, so every
 * spelling that could reach an account counts against that account's budget; `Paul ` and `paul`
 * never get two. A body without a string username (it can never log in) counts under `user:`.
 */
export function loginIdentity(request: AddressedRequest, username: unknown): string {
  const name = typeof username === 'string' ? username.trim().toLowerCase() : '';
  return `${ipKey(request)}|user:${name}`;
}

@Controller('auth')
export class AuthController {
  private readonly logger = new Logger(AuthController.name);

  constructor(
    private readonly users: UsersService,
    private readonly rateLimits: RateLimitService,
  ) {}

  /**
   * Returns the bearer token to call the API with. Brute-force protection, two counters:
   * - per client IP, across accounts: 20 failed logins an hour (the decorator; `count: 'failures'`
   *   gives a 2xx its unit back, a 401 or 429 keeps it). A success never forgives these, so owning
   *   one account buys an attacker nothing against the others;
   * - per account and IP: 5 failed logins a minute, then that account is locked for 15 minutes
   *   from that IP, even with the right password. A success forgives only that account's
   *   failures from that IP. A user behind the same IP, or the victim elsewhere, is not locked.
   * During a storage outage the route fails closed, with a 503: the guard's `onStorageError:
   * 'deny'`, and the handler's own answer when the per-account counter cannot be read.
   */
  @Post('login')
  @HttpCode(200)
  @RateLimit('20/hour', { bucket: LOGIN_IP_BUCKET, count: 'failures', onStorageError: 'deny' })
  async login(@Body() body: LoginBody = {}, @Req() request: AddressedRequest): Promise<{ token: string; tokenType: 'Bearer'; user: User }> {
    const identity = loginIdentity(request, body.username);
    // One unit of the account's budget from this IP, before the password is looked at: a locked
    // account gets a 429 whatever it sends. `enforce` fails closed: an attempt it cannot count
    // is refused with the 503 of the route's `onStorageError: 'deny'`, not let through.
    await this.rateLimits.enforce(identity, LOGIN_ACCOUNT_LIMIT);
    const session = this.users.login(body.username, body.password);
    // a failure: the attempt keeps its unit on both counters
    if (!session) throw new UnauthorizedException('Invalid username or password');
    await this.forgetFailedAttempts(identity);
    return { token: session.token, tokenType: 'Bearer', user: session.user };
  }

  /**
   * Forgets this account's failures from this IP, and nothing else: the per-IP count stays. A
   * storage outage must not turn a good password into an error: the failures then expire with
   * their minute instead (a lockout already set would have refused this login).
   */
  private async forgetFailedAttempts(identity: string): Promise<void> {
    try {
      await this.rateLimits.reset(identity, LOGIN_ACCOUNT_LIMIT);
    } catch (error) {
      this.logger.warn(`Could not reset the failed logins of a client: ${(error as Error).message}`);
    }
  }
}
