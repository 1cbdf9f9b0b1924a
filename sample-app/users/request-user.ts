import type { User, UserRequest } from './user.interface.js';

/**
 * The user {@link AuthMiddleware} found for this request. Nest middleware gets the platform's
 * request on Express, but the raw Node request on Fastify (`request.raw` of Fastify's own), so
 * the user is `request.user` on one and `request.raw.user` on the other. Read it through here,
 * in key functions, resolvers and handlers alike, and it works on both.
 */
export function requestUser(request: UserRequest): User | undefined {
  return request.user ?? request.raw?.user;
}
