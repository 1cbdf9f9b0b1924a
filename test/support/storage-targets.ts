import { MemoryStorage, RedisStorage, type RateLimitStorage } from '../../lib/index.js';
import type { FakeClock } from './fake-clock.js';
import type { TestRedis } from './redis-server.js';

/** A storage every behaviour is proven on, built on an injected clock. */
export interface StorageTarget {
  readonly name: string;
  create(clock: FakeClock): RateLimitStorage;
  /** When the state under `key` expires (ms since the epoch), or undefined if there is none. */
  expiresAt(storage: RateLimitStorage, key: string): Promise<number | undefined>;
}

export const memoryTarget: StorageTarget = {
  name: 'memory',
  create: (clock) => new MemoryStorage({ clock: clock.now }),
  expiresAt: async (storage, key) => (storage as MemoryStorage).expiresAt(key),
};

export function redisTarget(redis: () => TestRedis): StorageTarget {
  return {
    name: 'redis',
    create: (clock) => new RedisStorage({ url: redis().url, clock: clock.now }),
    expiresAt: async (storage, key) => {
      const at = Number(await (storage as RedisStorage).client.call('PEXPIRETIME', key));
      return at < 0 ? undefined : at;
    },
  };
}

/** Closes what a target's `create` opened. */
export async function closeStorage(storage: RateLimitStorage): Promise<void> {
  await storage.close?.();
}
