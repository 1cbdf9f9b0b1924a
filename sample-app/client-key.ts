import { clientIp } from '../lib/index.js';

/** The request as `clientIp` reads it: Express's or Fastify's, both have `ip` and `socket`. */
export type AddressedRequest = Parameters<typeof clientIp>[0];

/**
 * The identity the default key gives a request, for `RateLimitService` calls about a route that
 * counts by IP: `ip:` and the address as the guard reads it (`req.ip`, so `trust proxy` applies,
 * IPv6 by /64). Built any other way, a `reset` would forget some other client's attempts.
 */
export function ipKey(request: AddressedRequest): string {
  return `ip:${clientIp(request)}`;
}
