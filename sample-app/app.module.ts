import { Module, type DynamicModule, type MiddlewareConsumer, type NestModule } from '@nestjs/common';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { GraphQLModule } from '@nestjs/graphql';
import { TerminusModule } from '@nestjs/terminus';
import { RateLimitModule, type RateLimitAdvisorOptions, type RateLimitModuleOptions } from '../lib/index.js';
import { AdminGuard } from './admin/admin.guard.js';
import { AuthController } from './auth/auth.controller.js';
import { HealthController } from './health/health.controller.js';
import { ItemsController } from './items/items.controller.js';
import { MetricsController } from './metrics/metrics.controller.js';
import { QuotaController } from './quota/quota.controller.js';
import { PriceChangesResolver } from './quotes/price-changes.resolver.js';
import { priceFeedTimingProvider } from './quotes/price-feed.js';
import { QuoteResolver } from './quotes/quote.resolver.js';
import { QuotesController } from './quotes/quotes.controller.js';
import { QuotesGrpcController } from './quotes/quotes.grpc-controller.js';
import { QuotesGateway } from './quotes/quotes.gateway.js';
import { QuotesService } from './quotes/quotes.service.js';
import { ReportsController } from './reports/reports.controller.js';
import { reportDelayProvider, ReportsService } from './reports/reports.service.js';
import { SearchController } from './search/search.controller.js';
import { SampleTelemetry } from './telemetry.js';
import { UserDataController } from './user-data/user-data.controller.js';
import { UserIdKeyResolver } from './user-data/user-id.key-resolver.js';
import { AuthMiddleware } from './users/auth.middleware.js';
import { UsersService } from './users/users.service.js';

export interface AppModuleOptions {
  /** Where rate-limit counters live; in memory unless told otherwise. */
  storage?: RateLimitModuleOptions['storage'];
  /** How long to wait for the storage and what to do when it fails (the module's defaults otherwise). */
  storagePolicy?: Pick<RateLimitModuleOptions, 'storageTimeout' | 'onStorageError'>;
  /**
   * OpenTelemetry, from `setUpTelemetry()`, which must run before the app is created. With it,
   * GET /metrics serves the metrics; without it there is no such route (and, with no SDK
   * registered, the limiter's instruments are no-ops).
   */
  telemetry?: SampleTelemetry;
  /**
   * The limit advisor, and its dashboard at `admin/rate-limits` behind {@link AdminGuard}: `true`
   * (main.ts turns it on), or options (a test's clock). Off unless asked for: it keeps a second
   * counter per client and window, which tests counting storage keys would see.
   */
  advisor?: boolean | RateLimitAdvisorOptions;
}

/** Where the advisor's dashboard is served: the page, and its report at `admin/rate-limits/report.json`. */
export const DASHBOARD_PATH = 'admin/rate-limits';

/**
 * The advisor shows identities as the limits key them (`ip:<address>`, `user:<id>`), as a demo may:
 * where identities are personal data, pass `redactIdentities: true` (or `{ secret }` on Redis).
 * Every limited route is observed unless its `@RateLimit` says `advise: false`, GET /quotes/:symbol
 * among them (policy `quotes`, with the GraphQL `quote` query and gRPC's GetQuote on its budget).
 */
function advisorOptions(advisor: AppModuleOptions['advisor']): Pick<RateLimitModuleOptions, 'advisor' | 'dashboard'> {
  if (advisor === undefined || advisor === false) return {};
  return { advisor: advisor === true ? { redactIdentities: false } : { redactIdentities: false, ...advisor }, dashboard: { path: DASHBOARD_PATH, guard: AdminGuard } };
}

@Module({})
export class AppModule implements NestModule {
  /** A dynamic module so the storage is chosen by whoever starts the app: main.ts or a test. */
  static register(options: AppModuleOptions = {}): DynamicModule {
    return {
      module: AppModule,
      imports: [
        RateLimitModule.forRoot({ storage: options.storage ?? { type: 'memory' }, ...options.storagePolicy, ...advisorOptions(options.advisor) }),
        // POST /graphql, schema built in memory; subscriptions over graphql-ws on the same path. Express
        // calls `context` with { req, res }, Fastify with (request, reply): either way the context keeps
        // the response, for the rate-limit headers. graphql-ws calls it with its own context (the socket's
        // upgrade request and connection params, under `extra`), which is kept as it is.
        GraphQLModule.forRoot<ApolloDriverConfig>({
          driver: ApolloDriver,
          autoSchemaFile: true,
          subscriptions: { 'graphql-ws': true },
          context: (http: object, reply?: object) => (reply === undefined || 'extra' in http ? http : { req: http, reply }),
        }),
        // GET /health: HealthCheckService, and the HealthIndicatorService RateLimitHealthIndicator uses
        TerminusModule,
      ],
      controllers: [
        QuotesController,
        QuotesGrpcController, // gRPC `Quotes`: served once main.ts connects the gRPC server
        AuthController,
        ItemsController,
        UserDataController,
        HealthController,
        QuotaController,
        ReportsController,
        SearchController,
        ...(options.telemetry ? [MetricsController] : []),
      ],
      // UserIdKeyResolver is a provider so the rate-limit guard gets it, with UsersService, from DI.
      // RateLimitService, which AuthController and QuotaController inject, comes from the global RateLimitModule.
      providers: [
        UsersService,
        QuotesService,
        UserIdKeyResolver,
        QuotesGateway,
        QuoteResolver,
        PriceChangesResolver,
        ReportsService,
        reportDelayProvider, // how long a report takes: tests replace it
        priceFeedTimingProvider, // how often WatchPrices and priceChanged send a price: tests replace it
        ...(options.telemetry ? [{ provide: SampleTelemetry, useValue: options.telemetry }] : []),
      ],
    };
  }

  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(AuthMiddleware).forRoutes('*');
  }
}
