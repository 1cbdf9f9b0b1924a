import { Injectable } from '@nestjs/common';
import { bearerToken } from './bearer-token.js';
import type { User } from './user.interface.js';

interface DemoAccount {
  readonly username: string;
  /** Plain text because this is a demo; a real service stores a slow hash. */
  readonly password: string;
  readonly token: string;
  readonly user: User;
}

const DEMO_ACCOUNTS: readonly DemoAccount[] = [
  { username: 'fiona', password: 'free-password', token: 'free-token', user: { id: 'u-free', name: 'Fiona Free', plan: 'free' } },
  { username: 'paul', password: 'paid-password', token: 'paid-token', user: { id: 'u-paid', name: 'Paul Paid', plan: 'paid' } },
];

/** In-memory stand-in for a user store and its API tokens. */
@Injectable()
export class UsersService {
  private readonly byToken = new Map(DEMO_ACCOUNTS.map((account) => [account.token, account]));

  findByToken(token: string | undefined): User | undefined {
    return token === undefined ? undefined : this.byToken.get(token)?.user;
  }

  /** The user of an `Authorization: Bearer <token>` header, if the token is known. */
  findByAuthorization(authorization: string | string[] | undefined): User | undefined {
    return this.findByToken(bearerToken(authorization));
  }

  /** The API token and user for valid credentials; undefined otherwise. */
  login(username: unknown, password: unknown): { token: string; user: User } | undefined {
    const account = DEMO_ACCOUNTS.find((a) => a.username === username && a.password === password);
    return account && { token: account.token, user: account.user };
  }
}
