import type { ExecutionContext } from '@nestjs/common';
import type { RateLimitKeyResolver } from './rate-limit-key-resolver.interface.js';

/**
 * A built-in resolver whose identities are `<prefix>:<value>`. The guard looks such a client up
 * by its value alone (RuleSet.byValue): concatenating `<prefix>:<value>` on every request, and
 * hashing that fresh string, cost more than a memory-storage check. A subclass that overrides
 * `resolve` is asked through `resolve`, as any other resolver.
 */
export abstract class PrefixedKeyResolver implements RateLimitKeyResolver {
  /** What the client's value is, e.g. `ip` or the header's name; the part before the colon. */
  abstract readonly prefix: string;

  /** The client's value; undefined or '' to fall back to the client IP. */
  abstract value(context: ExecutionContext): string | undefined;

  resolve(context: ExecutionContext): string | undefined {
    const value = this.value(context);
    return value ? `${this.prefix}:${value}` : undefined;
  }

  /** Whether the guard may take the value without calling `resolve`. */
  static byValue(resolver: RateLimitKeyResolver): resolver is PrefixedKeyResolver {
    return resolver instanceof PrefixedKeyResolver && resolver.resolve === PrefixedKeyResolver.prototype.resolve;
  }
}
