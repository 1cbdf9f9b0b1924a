import { Injectable } from '@nestjs/common';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';
import { RateLimitExceptionFilter } from '../filters/rate-limit-exception.filter.js';
import { RateLimitGuard } from '../guards/rate-limit.guard.js';

/** Nest's metadata keys (the same since Nest 5): a `@MessagePattern`/`@EventPattern`, `@UseGuards`, `@UseFilters`. */
const PATTERN_METADATA = 'microservices:pattern';
const GUARDS_METADATA = '__guards__';
const EXCEPTION_FILTERS_METADATA = '__exceptionFilters__';

/**
 * A microservice connected to an HTTP app (`app.connectMicroservice`) gets none of the app's
 * global guards and filters unless it is connected with `{ inheritAppConfig: true }`: its
 * limited handlers would run unlimited, silently. So every message handler gets the module's
 * guard and filter as its own: the guard then runs whatever the app's configuration, and checks
 * a message once even where it also runs as a global guard.
 *
 * It runs when the providers are built, before the microservices bind their handlers.
 */
@Injectable()
export class MessageHandlerEnhancers {
  constructor(discovery: DiscoveryService, scanner: MetadataScanner, guard: RateLimitGuard) {
    const filter = new RateLimitExceptionFilter();
    for (const { metatype } of discovery.getControllers()) {
      if (typeof metatype !== 'function') continue;
      for (const name of scanner.getAllMethodNames(metatype.prototype)) {
        const handler = (metatype.prototype as Record<string, unknown>)[name];
        if (typeof handler !== 'function' || !Reflect.hasMetadata(PATTERN_METADATA, handler)) continue;
        // this app's guard, in place of one an earlier app in this process put there
        const guards: unknown[] = Reflect.getMetadata(GUARDS_METADATA, handler) ?? [];
        Reflect.defineMetadata(GUARDS_METADATA, [guard, ...guards.filter((g) => !(g instanceof RateLimitGuard))], handler);
        // first of the handler's filters is the last Nest consults: the app's own come first
        const filters: unknown[] = Reflect.getMetadata(EXCEPTION_FILTERS_METADATA, handler) ?? [];
        if (!filters.some((f) => f instanceof RateLimitExceptionFilter || f === RateLimitExceptionFilter)) {
          Reflect.defineMetadata(EXCEPTION_FILTERS_METADATA, [filter, ...filters], handler);
        }
      }
    }
  }
}
