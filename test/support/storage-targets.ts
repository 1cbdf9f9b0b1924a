import type { Cluster } from 'ioredis';
import { MemoryStorage, RedisStorage, type RateLimitStorage } from '../../lib/index.js';
import type { FakeClock } from './fake-clock.js';
import { closeCluster, type TestCluster } from './redis-cluster.js';
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
    // The block cache answers denials with the blocking rule only; exact comparisons need every rule.
    create: (clock) => new RedisStorage({ url: redis().url, clock: clock.now, blockCache: false }),
    expiresAt: async (storage, key) => {
      const at = Number(await (storage as RedisStorage).client.call('PEXPIRETIME', key));
      return at < 0 ? undefined : at;
    },
  };
}

/** RedisStorage never closes a client it was given; here the target owns it, so close() does. */
class ClusterClientStorage extends RedisStorage {
  override async close(): Promise<void> {
    await super.close();
    await closeCluster(this.client as Cluster);
  }
}

/** RedisStorage on a Cluster client: every check's keys share one hash tag, so one slot. */
export function clusterTarget(cluster: () => TestCluster): StorageTarget {
  return {
    name: 'redis-cluster',
    // exact comparisons need every rule, which the block cache's denials leave out (as redisTarget)
    create: (clock) => new ClusterClientStorage({ client: cluster().client(), clock: clock.now, blockCache: false }),
    expiresAt: async (storage, key) => {
      // routed by key, so it asks the master that holds the state
      const at = Number(await (storage as RedisStorage).client.call('PEXPIRETIME', key));
      return at < 0 ? undefined : at;
    },
  };
}

/** Closes what a target's `create` opened. */
export async function closeStorage(storage: RateLimitStorage): Promise<void> {
  await storage.close?.();
}
