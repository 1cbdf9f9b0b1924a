import type { Type } from '@nestjs/common';
import type { DiscoveryService, MetadataScanner } from '@nestjs/core';
import { CONCURRENCY_LIMIT_METADATA } from '../decorators/concurrency-limit.decorator.js';
import { RATE_LIMIT_METADATA } from '../decorators/rate-limit.decorator.js';
import { SKIP_RATE_LIMIT_METADATA } from '../decorators/skip-rate-limit.decorator.js';
import type { RateLimitStorage } from '../storage/rate-limit-storage.interface.js';
import { StreamSlotGuard } from '../guards/stream-slot.guard.js';
import { RateLimitInterceptor, SSE_METADATA } from './rate-limit.interceptor.js';

/** Nest's metadata keys of `@UseInterceptors()` and `@UseGuards()` (the same since Nest 5). */
const INTERCEPTORS_METADATA = '__interceptors__';
export const GUARDS_METADATA = '__guards__';

/**
 * Puts `interceptor` first among the interceptors of every handler that needs it: controller
 * routes and provider methods (gateways, resolvers) whose `@ConcurrencyLimit`, or whose
 * `@RateLimit` with a `count` other than 'all', applies (handler over class; `@SkipRateLimit()`
 * exempts). Nothing else gets it: a feature that is off costs no request anything. An earlier
 * app's interceptor on a shared handler (apps built from the same classes in one process) is
 * replaced; Nest reads the list when it registers the routes, so each app keeps its own.
 *
 * An `@Sse()` route under `@ConcurrencyLimit` also gets a StreamSlotGuard, last among its guards,
 * which takes the slot before the stream starts.
 *
 * Throws, naming the routes, if a `@ConcurrencyLimit` applies and the storage cannot lease slots.
 */
export function bindRateLimitInterceptor(
  discovery: DiscoveryService,
  scanner: MetadataScanner,
  interceptor: RateLimitInterceptor,
  storage: RateLimitStorage,
): void {
  const unsupported: string[] = [];
  const wrappers = [...discovery.getControllers(), ...discovery.getProviders()];
  for (const { metatype, inject } of wrappers) {
    if (typeof metatype !== 'function' || inject || !metatype.prototype) continue;
    for (const name of scanner.getAllMethodNames(metatype.prototype)) {
      const handler = (metatype.prototype as Record<string, unknown>)[name];
      if (typeof handler !== 'function') continue;
      const applies = (key: string): unknown => Reflect.getMetadata(key, handler) ?? Reflect.getMetadata(key, metatype);
      if (applies(SKIP_RATE_LIMIT_METADATA) === true) continue;
      const concurrency = applies(CONCURRENCY_LIMIT_METADATA) !== undefined;
      const count = (applies(RATE_LIMIT_METADATA) as { options: { count?: string } } | undefined)?.options.count ?? 'all';
      if (!concurrency && count === 'all') continue;
      if (concurrency && (typeof storage.acquire !== 'function' || typeof storage.release !== 'function')) {
        unsupported.push(`${(metatype as Type).name}.${name}`);
      }
      const interceptors: unknown[] = Reflect.getMetadata(INTERCEPTORS_METADATA, handler) ?? [];
      Reflect.defineMetadata(INTERCEPTORS_METADATA, [interceptor, ...interceptors.filter((i) => !(i instanceof RateLimitInterceptor))], handler);
      if (concurrency && Reflect.getMetadata(SSE_METADATA, handler) === true) {
        const guards: unknown[] = Reflect.getMetadata(GUARDS_METADATA, handler) ?? [];
        Reflect.defineMetadata(GUARDS_METADATA, [...guards.filter((g) => !(g instanceof StreamSlotGuard)), new StreamSlotGuard(interceptor)], handler);
      }
    }
  }
  if (unsupported.length > 0) {
    throw new Error(
      `RateLimitModule: @ConcurrencyLimit on ${unsupported.join(', ')} needs a storage with acquire() and release(), ` +
        `which ${storage.constructor?.name ?? 'the storage'} lacks. Use MemoryStorage or RedisStorage, or implement both (see RateLimitStorage).`,
    );
  }
}
