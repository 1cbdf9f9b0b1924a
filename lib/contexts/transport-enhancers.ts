import { Inject, Injectable } from '@nestjs/common';
import { RATE_LIMIT_METRICS, type RateLimitMetrics } from '../observability/rate-limit-metrics.js';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';
import { DeniedEvents } from './denied-events.js';
import { RateLimitExceptionFilter } from '../filters/rate-limit-exception.filter.js';
import { RateLimitGuard } from '../guards/rate-limit.guard.js';
import { bindRateLimitInterceptor, GUARDS_METADATA } from '../interceptors/interceptor-binding.js';
import { RateLimitInterceptor } from '../interceptors/rate-limit.interceptor.js';
import { RATE_LIMIT_CONFIG, type RateLimitConfig } from '../rate-limit.config.js';
import { RoutePlanner } from '../rules/route-planner.js';
import { RATE_LIMIT_STORAGE, type RateLimitStorage } from '../storage/rate-limit-storage.interface.js';

/** Nest's metadata keys (the same since Nest 5). */
const GATEWAY_METADATA = 'websockets:is_gateway'; // @WebSocketGateway()
const PATTERN_METADATA = 'microservices:pattern'; // @MessagePattern(), @EventPattern()
const EXCEPTION_FILTERS_METADATA = '__exceptionFilters__'; // @UseFilters()

/**
 * Where Nest applies no app-wide guard or filter, the module binds its own, so a limit there is
 * neither skipped nor answered as an internal error:
 * - WebSocket gateways get no app-wide filter (`APP_FILTER`, `useGlobalFilters`): each gateway
 *   gets the module's filter;
 * - a microservice connected to an HTTP app without `{ inheritAppConfig: true }` gets neither the
 *   app's guards nor its filters: each message handler gets the module's guard and filter. The
 *   guard checks a message once where it also runs as a global guard.
 *
 * The module's filter goes first in a target's filters, which Nest consults last: the app's own
 * filters come first, as a controller's do over app filters on HTTP. It catches only refusals.
 * Handlers under `@ConcurrencyLimit`, or `@RateLimit` with a `count` other than 'all', get the
 * module's interceptor on every transport (see bindRateLimitInterceptor); no other handler does.
 * This runs when the providers are built, before `app.init()` and the microservices bind handlers.
 */
@Injectable()
export class TransportEnhancers {
  constructor(
    discovery: DiscoveryService,
    scanner: MetadataScanner,
    guard: RateLimitGuard,
    @Inject(RATE_LIMIT_CONFIG) config: RateLimitConfig,
    @Inject(RATE_LIMIT_STORAGE) storage: RateLimitStorage,
    planner: RoutePlanner,
    @Inject(RATE_LIMIT_METRICS) metrics: RateLimitMetrics,
    deniedEvents: DeniedEvents,
  ) {
    bindRateLimitInterceptor(discovery, scanner, new RateLimitInterceptor(config, storage, planner, metrics, deniedEvents), storage);
    const filter = new RateLimitExceptionFilter();
    for (const { metatype } of discovery.getProviders()) {
      if (typeof metatype === 'function' && Reflect.hasMetadata(GATEWAY_METADATA, metatype)) withFilter(metatype, filter);
    }
    for (const { metatype } of discovery.getControllers()) {
      if (typeof metatype !== 'function') continue;
      for (const name of scanner.getAllMethodNames(metatype.prototype)) {
        const handler = (metatype.prototype as Record<string, unknown>)[name];
        if (typeof handler !== 'function' || !Reflect.hasMetadata(PATTERN_METADATA, handler)) continue;
        // this app's guard, in place of one an earlier app in this process put there
        const guards: unknown[] = Reflect.getMetadata(GUARDS_METADATA, handler) ?? [];
        Reflect.defineMetadata(GUARDS_METADATA, [guard, ...guards.filter((g) => !(g instanceof RateLimitGuard))], handler);
        withFilter(handler, filter);
      }
    }
  }
}

/** Puts the module's filter first among `target`'s filters, unless it is there already. */
function withFilter(target: object, filter: RateLimitExceptionFilter): void {
  const filters: unknown[] = Reflect.getMetadata(EXCEPTION_FILTERS_METADATA, target) ?? [];
  if (filters.some((f) => f === RateLimitExceptionFilter || f instanceof RateLimitExceptionFilter)) return;
  Reflect.defineMetadata(EXCEPTION_FILTERS_METADATA, [filter, ...filters], target);
}
