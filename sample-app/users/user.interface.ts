export type Plan = 'free' | 'paid';

export interface User {
  readonly id: string;
  readonly name: string;
  readonly plan: Plan;
}

/**
 * A request after {@link AuthMiddleware}: `user` is set only for a known bearer token, on the
 * request the middleware saw: Express's, or on Fastify the raw Node request. Read it with
 * {@link requestUser}.
 */
export interface UserRequest {
  headers: Record<string, string | string[] | undefined>;
  user?: User;
  /** Fastify: the Node request, which Nest middleware gets. */
  raw?: { user?: User };
}
