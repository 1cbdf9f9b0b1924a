import type { INestApplication, ModuleMetadata, Type } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { MemoryStorage, RateLimitModule, RedisStorage, type RateLimitModuleOptions, type RateLimitStorage } from '../../lib/index.js';
import type { FakeClock } from './fake-clock.js';
import type { TestRedis } from './redis-server.js';

/** A small Nest app around some controllers and the module under test. */
export async function createScenarioApp(
  controllers: Type[],
  options: RateLimitModuleOptions,
  extra: Pick<ModuleMetadata, 'providers' | 'imports'> = {},
): Promise<INestApplication> {
  const moduleRef = await Test.createTestingModule({
    imports: [RateLimitModule.forRoot(options), ...(extra.imports ?? [])],
    controllers,
    providers: extra.providers ?? [],
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  await app.init();
  return app;
}

/** The storages every behaviour is proven on, each on an injected clock. */
export interface StorageKind {
  readonly name: 'memory' | 'redis';
  create(clock: FakeClock): RateLimitStorage;
}

export function storageKinds(redis: () => TestRedis): StorageKind[] {
  return [
    { name: 'memory', create: (clock) => new MemoryStorage({ clock: clock.now }) },
    { name: 'redis', create: (clock) => new RedisStorage({ url: redis().url, clock: clock.now }) },
  ];
}
