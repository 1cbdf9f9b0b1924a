import type { ExecutionContext } from '@nestjs/common';
import { rateLimitRequest, type RateLimitKeyFunction, type RateLimitRateFunction } from '../../lib/index.js';
import { requestUser } from '../users/request-user.js';

/**
 * The limit of a quote, for `GET /quotes/:symbol` and the GraphQL `quote` query alike. Both name
 * this bucket, so they draw on one budget: 100 quotes a minute is 100 whichever way they come.
 */
export const QUOTES_BUCKET = 'quotes';

/** `rateLimitRequest()` is the HTTP request on both transports (for GraphQL, the one carrying the operation). */
function paidUser(context: ExecutionContext) {
  const user = requestUser(rateLimitRequest(context));
  return user?.plan === 'paid' ? user : undefined;
}

/**
 * Paid users get 1000/minute on their own budget, wherever they call from. Everyone else, free
 * users included, shares the 100/minute of their IP: a free token buys no extra quota.
 */
export const quoteRate: RateLimitRateFunction = (context) => (paidUser(context) ? '1000/minute' : '100/minute');

export const quoteKey: RateLimitKeyFunction = (context) => {
  const user = paidUser(context);
  return user ? `user:${user.id}` : undefined; // undefined: the client IP
};
