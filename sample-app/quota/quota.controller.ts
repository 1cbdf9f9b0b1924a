import { Controller, Get, Req } from '@nestjs/common';
import { RateLimit, RateLimitService } from '../../lib/index.js';
import { ipKey, type AddressedRequest } from '../client-key.js';
import { QUOTES_BUCKET, quoteKey, quotePlan } from '../quotes/quote-rate-limit.js';
import type { UserRequest } from '../users/user.interface.js';

/** One quota, as GitHub's `GET /rate_limit` shows it: `reset` in seconds since the epoch. */
export interface Quota {
  readonly limit: number;
  readonly remaining: number;
  readonly reset: number;
}

export interface QuotaOverview {
  readonly resources: { readonly quotes: Quota };
}

@Controller('rate_limit')
export class QuotaController {
  constructor(private readonly rateLimits: RateLimitService) {}

  /**
   * The caller's quota for quotes (`GET /quotes/:symbol` and the GraphQL `quote` query), without
   * charging it: `peek` only reads. The caller's plan decides both the budget it reads (`user:<id>`
   * for a paid user, else the IP's) and its rate, which the quote routes pick with a function: so
   * it is passed here along with the bucket.
   *
   * Not free, though: each call is a storage read. It has a limit of its own, 60 a minute on the
   * quotes' key, more than any client polling its quota needs, and it never touches the quotes' budget.
   */
  @Get()
  @RateLimit('60/minute', { key: quoteKey })
  async show(@Req() request: UserRequest & AddressedRequest): Promise<QuotaOverview> {
    const plan = quotePlan(request);
    const status = await this.rateLimits.peek(plan.key ?? ipKey(request), { bucket: QUOTES_BUCKET, rate: plan.rate });
    return {
      resources: {
        quotes: { limit: status.limit, remaining: status.remaining, reset: Math.ceil(status.resetAt / 1000) },
      },
    };
  }
}
