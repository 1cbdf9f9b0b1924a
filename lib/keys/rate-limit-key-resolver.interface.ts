import type { ExecutionContext, Type } from '@nestjs/common';

/**
 * Says who a request comes from. Return `undefined` or `''` to fall back to the client IP.
 * Classes are resolved through Nest's DI, so they can inject other providers.
 */
export interface RateLimitKeyResolver {
  resolve(context: ExecutionContext): string | undefined | Promise<string | undefined>;
}

export type RateLimitKeyFunction = (context: ExecutionContext) => string | undefined | Promise<string | undefined>;

/** A function, a resolver class (resolved through DI), or a resolver instance. */
export type RateLimitKey = RateLimitKeyFunction | Type<RateLimitKeyResolver> | RateLimitKeyResolver;
