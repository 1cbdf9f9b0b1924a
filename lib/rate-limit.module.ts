import {
  Inject,
  Module,
  type DynamicModule,
  type OnApplicationShutdown,
  type OnModuleInit,
  type Provider,
} from '@nestjs/common';
import { APP_FILTER, APP_GUARD, DiscoveryModule } from '@nestjs/core';
import { DeniedEvents } from './contexts/denied-events.js';
import { MessageServers } from './contexts/message-servers.js';
import { TransportEnhancers } from './contexts/transport-enhancers.js';
import { RateLimitExceptionFilter } from './filters/rate-limit-exception.filter.js';
import { RateLimitGuard } from './guards/rate-limit.guard.js';
import { RateLimitHealthIndicator } from './health/rate-limit.health-indicator.js';
import { RATE_LIMIT_CONFIG, resolveConfig } from './rate-limit.config.js';
import {
  ConfigurableRateLimitModule,
  RATE_LIMIT_ASYNC_OPTIONS_TYPE,
  RATE_LIMIT_MODULE_OPTIONS,
  RATE_LIMIT_OPTIONS_TYPE,
} from './rate-limit.module-definition.js';
import type { RateLimitDashboardOptions, RateLimitModuleOptions } from './rate-limit.options.js';
import { resolveDashboard } from './advisor/advisor-config.js';
import { dashboardController } from './advisor/dashboard.controller.js';
import { LimitAdvisor } from './advisor/limit-advisor.js';
import { RoutePlanner } from './rules/route-planner.js';
import { createRateLimitMetrics, RATE_LIMIT_METRICS, type RateLimitMetrics } from './observability/rate-limit-metrics.js';
import { RateLimitService } from './service/rate-limit.service.js';
import { createStorage } from './storage/create-storage.js';
import { RATE_LIMIT_STORAGE, type RateLimitStorage } from './storage/rate-limit-storage.interface.js';

const PROVIDERS: Provider[] = [
  { provide: RATE_LIMIT_CONFIG, useFactory: resolveConfig, inject: [RATE_LIMIT_MODULE_OPTIONS] },
  {
    provide: RATE_LIMIT_STORAGE,
    useFactory: (options: RateLimitModuleOptions) => createStorage(options.storage),
    inject: [RATE_LIMIT_MODULE_OPTIONS],
  },
  { provide: RATE_LIMIT_METRICS, useFactory: createRateLimitMetrics, inject: [RATE_LIMIT_STORAGE] },
  RoutePlanner,
  RateLimitService,
  MessageServers, // the app's microservice servers: keys checked at start-up, RabbitMQ acknowledgement
  DeniedEvents, // what becomes of a refused microservice event
  RateLimitGuard,
  { provide: APP_GUARD, useExisting: RateLimitGuard },
  { provide: APP_FILTER, useClass: RateLimitExceptionFilter },
  TransportEnhancers, // the guard and filter where Nest applies no app-wide ones: gateways, hybrid microservices
  RateLimitHealthIndicator, // loads @nestjs/terminus (an optional peer) only when a health check runs
  LimitAdvisor, // inert unless the `advisor` option is on
];

/**
 * Global rate limiting: `RateLimitModule.forRoot({ storage, defaultLimit, ... })`, then
 * `@RateLimit('10/minute')` on controllers or handlers.
 */
@Module({})
export class RateLimitModule extends ConfigurableRateLimitModule implements OnModuleInit, OnApplicationShutdown {
  constructor(
    @Inject(RATE_LIMIT_STORAGE) private readonly storage: RateLimitStorage,
    @Inject(RATE_LIMIT_METRICS) private readonly metrics: RateLimitMetrics,
  ) {
    super();
  }

  /** Lets a storage connect before the app takes traffic. */
  async onModuleInit(): Promise<void> {
    await this.storage.init?.();
  }

  /** Closes only what the storage opened itself: a client you passed in stays yours. */
  async onApplicationShutdown(): Promise<void> {
    this.metrics.close();
    await this.storage.close?.();
  }

  static forRoot(options: typeof RATE_LIMIT_OPTIONS_TYPE = {}): DynamicModule {
    resolveConfig(options); // a bad rate string or option fails here, where the app is composed
    return withProviders(super.forRoot(options), options.dashboard);
  }

  /** `dashboard` goes here, beside the factory, since it adds a route: routes are known before factories run. */
  static forRootAsync(options: typeof RATE_LIMIT_ASYNC_OPTIONS_TYPE & { dashboard?: RateLimitDashboardOptions }): DynamicModule {
    const { dashboard, ...async } = options;
    return withProviders(super.forRootAsync(async), dashboard);
  }
}

function withProviders(module: DynamicModule, dashboard?: RateLimitDashboardOptions): DynamicModule {
  const page = dashboard === undefined ? undefined : resolveDashboard(dashboard);
  return {
    ...module,
    controllers: [...(module.controllers ?? []), ...(page ? [dashboardController(page.path, dashboard!.guard)] : [])],
    global: true,
    // the route planner walks the app's routes at start-up
    imports: [...(module.imports ?? []), DiscoveryModule],
    providers: [...(module.providers ?? []), ...PROVIDERS],
    exports: [...(module.exports ?? []), RATE_LIMIT_STORAGE, RATE_LIMIT_CONFIG, RateLimitService, RateLimitHealthIndicator, LimitAdvisor],
  };
}
