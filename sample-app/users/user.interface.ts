export type Plan = 'free' | 'paid';

export interface User {
  readonly id: string;
  readonly name: string;
  readonly plan: Plan;
}

/** A request after {@link AuthMiddleware}: `user` is set only for a known bearer token. */
export interface UserRequest {
  headers: Record<string, string | string[] | undefined>;
  user?: User;
}
