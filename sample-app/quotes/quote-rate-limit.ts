import type { ExecutionContext } from '@nestjs/common';
import { rateLimitRequest, type RateLimitKeyFunction, type RateLimitRateFunction } from '../../lib/index.js';
import { requestUser } from '../users/request-user.js';
import type { UserRequest } from '../users/user.interface.js';

/**
 * The limit of a quote, for `GET /quotes/:symbol`, the GraphQL `quote` query and gRPC's
 * `Quotes.GetQuote` alike. All name this bucket, so they draw on one budget: 100 quotes a minute
 * is 100 whichever way they come.
 */
export const QUOTES_BUCKET = 'quotes';

/** A caller's quote allowance: its rate, and the key its quotes count under. */
export interface QuotePlan {
  readonly rate: string;
  /** `user:<id>` for a paid user; undefined for everyone else, who count under the client IP. */
  readonly key: string | undefined;
}

const FREE_PLAN: QuotePlan = { rate: '100/minute', key: undefined };

/**
 * Paid users get 1000/minute on their own budget, wherever they call from. Everyone else, free
 * users included, shares the 100/minute of their IP: a free token buys no extra quota.
 * `GET /rate_limit` reads the same plan, so it shows the budget the quotes really draw on.
 */
export function quotePlan(request: UserRequest): QuotePlan {
  const user = requestUser(request);
  return user?.plan === 'paid' ? { rate: '1000/minute', key: `user:${user.id}` } : FREE_PLAN;
}

/**
 * `rateLimitRequest()` is the HTTP request on HTTP and GraphQL (for GraphQL, the one carrying the
 * operation). A gRPC call has none, only its metadata, and AuthMiddleware never sees it: every
 * gRPC caller is on the free plan, counted under its address (`ip:<address>`, the key HTTP's
 * client IP gets too), so its calls and its HTTP requests share one 100 a minute.
 */
function planOf(context: ExecutionContext): QuotePlan {
  if (context.getType() === 'rpc') return FREE_PLAN;
  return quotePlan(rateLimitRequest<UserRequest>(context));
}

export const quoteRate: RateLimitRateFunction = (context) => planOf(context).rate;

export const quoteKey: RateLimitKeyFunction = (context) => planOf(context).key; // undefined: the client IP
