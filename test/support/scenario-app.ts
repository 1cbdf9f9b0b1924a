import type { INestApplication, ModuleMetadata, NestApplicationOptions, Type } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { RateLimitModule, type RateLimitModuleOptions } from '../../lib/index.js';
import type { TestRedis } from './redis-server.js';
import { memoryTarget, redisTarget, type StorageTarget } from './storage-targets.js';

/** A small Nest app around some controllers and the module under test. */
export async function createScenarioApp(
  controllers: Type[],
  options: RateLimitModuleOptions,
  extra: Pick<ModuleMetadata, 'providers' | 'imports'> & Pick<NestApplicationOptions, 'forceCloseConnections'> = {},
): Promise<INestApplication> {
  const moduleRef = await Test.createTestingModule({
    imports: [RateLimitModule.forRoot(options), ...(extra.imports ?? [])],
    controllers,
    providers: extra.providers ?? [],
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false, forceCloseConnections: extra.forceCloseConnections });
  await app.init();
  return app;
}

/** The storages every e2e behaviour is proven on. */
export function storageKinds(redis: () => TestRedis): StorageTarget[] {
  return [memoryTarget, redisTarget(redis)];
}
