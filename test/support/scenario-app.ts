import type { INestApplication, ModuleMetadata, NestApplicationOptions, Type } from '@nestjs/common';
import { ExpressAdapter } from '@nestjs/platform-express';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { Test, type TestingModule } from '@nestjs/testing';
import type { Express } from 'express';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { RateLimitModule, type RateLimitModuleOptions } from '../../lib/index.js';
import type { TestRedis } from './redis-server.js';
import { memoryTarget, redisTarget, type StorageTarget } from './storage-targets.js';
import { exact } from './exact.js';

/** The HTTP platforms Nest ships, each e2e behaviour is proven on both. */
export type HttpPlatform = 'express' | 'fastify';

/** For `describe.each(HTTP_PLATFORMS)('... on %s', (platform) => ...)`. */
export const HTTP_PLATFORMS: readonly HttpPlatform[] = ['express', 'fastify'];

/** How an HTTP app is built, whatever its module. */
export interface HttpAppOptions extends Pick<NestApplicationOptions, 'forceCloseConnections'> {
  /** Express unless told otherwise. */
  platform?: HttpPlatform;
  /**
   * Which proxies to trust: Express's `app.set('trust proxy', ...)`, Fastify's `trustProxy`
   * option. Both take `true`, addresses, subnets and names (`'loopback'`); a hop count only
   * Express: Fastify 5 trusts no proxy for a number (it cannot validate the peer), so it is
   * refused here rather than silently trusting nothing.
   */
  trustProxy?: boolean | number | string | string[];
  /** Runs before `init()`: `enableCors()`, global pipes... */
  beforeInit?: (app: INestApplication) => void | Promise<void>;
  /** Fastify only: builds the Node server (a bigger header limit, the lenient parser...). */
  fastifyServerFactory?: (handler: (request: IncomingMessage, response: ServerResponse) => void) => Server;
}

/**
 * A compiled module as an initialized app on `platform`. On Fastify it also waits for
 * `ready()`, so that supertest (which starts the server itself) finds every route registered.
 */
export async function createHttpApp(moduleRef: TestingModule, options: HttpAppOptions = {}): Promise<INestApplication> {
  const { platform = 'express', trustProxy, forceCloseConnections, beforeInit, fastifyServerFactory } = options;
  if (platform === 'fastify') {
    if (typeof trustProxy === 'number') throw new Error('Fastify takes no hop count for trustProxy: give the proxies\' addresses');
    // loaded only here: the specs that never ask for Fastify do not pay for loading it
    const { FastifyAdapter } = await import('@nestjs/platform-fastify');
    const adapter = new FastifyAdapter({
      ...(trustProxy === undefined ? {} : { trustProxy }),
      ...(fastifyServerFactory === undefined ? {} : { serverFactory: fastifyServerFactory }),
    });
    const app = moduleRef.createNestApplication<NestFastifyApplication>(adapter, { logger: false, forceCloseConnections });
    await beforeInit?.(app);
    await app.init();
    await app.getHttpAdapter().getInstance().ready();
    return app;
  }
  const app = moduleRef.createNestApplication(new ExpressAdapter(), { logger: false, forceCloseConnections });
  if (trustProxy !== undefined) (app.getHttpAdapter().getInstance() as Express).set('trust proxy', trustProxy);
  await beforeInit?.(app);
  await app.init();
  return app;
}

/** A small Nest app around some controllers and the module under test, on Express by default. */
export async function createScenarioApp(
  controllers: Type[],
  options: RateLimitModuleOptions,
  extra: Pick<ModuleMetadata, 'providers' | 'imports'> & HttpAppOptions & { asShipped?: boolean } = {},
): Promise<INestApplication> {
  // asShipped: the module's own default storageTimeout, as a deployment meets it (the attack rerun)
  const { providers = [], imports = [], asShipped = false, ...http } = extra;
  const moduleRef = await Test.createTestingModule({
    imports: [RateLimitModule.forRoot(asShipped ? options : exact(options)), ...imports],
    controllers,
    providers,
  }).compile();
  return createHttpApp(moduleRef, http);
}

/** The storages every e2e behaviour is proven on. */
export function storageKinds(redis: () => TestRedis): StorageTarget[] {
  return [memoryTarget, redisTarget(redis)];
}
