import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { RedisStorage } from '../../lib/index.js';
import { startCluster, type TestCluster } from '../support/redis-cluster.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { clusterTarget, memoryTarget, redisTarget } from '../support/storage-targets.js';
import { describeConcurrencyLeases } from './concurrency-leases-suite.js';

let redis: TestRedis;
let cluster: TestCluster;
beforeAll(async () => {
  [redis, cluster] = await Promise.all([startRedis(), startCluster()]);
}, 60_000);
afterAll(async () => {
  await Promise.all([redis?.stop(), cluster?.stop()]);
});

describe('concurrency leases on memory storage', () => {
  describeConcurrencyLeases(() => memoryTarget, async () => undefined);
});

describe('concurrency leases on redis storage', () => {
  describeConcurrencyLeases(() => redisTarget(() => redis), () => redis.flush());
});

describe('concurrency leases on Redis Cluster', () => {
  describeConcurrencyLeases(() => clusterTarget(() => cluster), () => cluster.flush());
});

describe('concurrency leases in Redis', () => {
  const KEY = 'rl:{ip:198.51.100.1}:Uploads.create:cc';
  const T0 = Date.UTC(2030, 0, 1);
  let storage: RedisStorage;
  beforeEach(async () => {
    await redis.flush();
    storage = new RedisStorage({ url: redis.url, clock: () => T0 });
    await storage.init();
  });
  afterEach(() => storage.close());

  it('replaces state that is not a sorted set, counting it as no lease, on acquire and on release', async () => {
    const warnings: string[] = [];
    jest.spyOn(Logger.prototype, 'warn').mockImplementation((message: unknown) => void warnings.push(String(message)));
    const client = redis.client();
    await client.set(KEY, 'left by something else');
    expect(await storage.acquire(KEY, 1, 1_000, 'a')).toEqual({ allowed: true, limit: 1, inFlight: 1 });
    expect(await client.type(KEY)).toBe('zset');
    await client.del(KEY);
    await client.hset(KEY, 'field', 'value');
    await storage.release(KEY, 'a'); // resolves, and the unreadable key is gone
    expect(await client.exists(KEY)).toBe(0);
    // logged (throttled: the second within 10 s is held back), never thrown at the request
    expect(warnings).toEqual([`Replaced concurrency leases it could not read (another type) under key "${KEY}"`]);
    jest.restoreAllMocks();
  });

  it('takes one round trip per acquire and per release', async () => {
    const sent: string[] = [];
    const client = storage.client as unknown as { sendCommand(command: { name: string }): unknown };
    const original = client.sendCommand.bind(client);
    client.sendCommand = (command) => {
      sent.push(command.name);
      return original(command);
    };
    await storage.acquire(KEY, 2, 1_000, 'a');
    expect(sent).toEqual(['evalsha']);
    await storage.release(KEY, 'a');
    expect(sent).toEqual(['evalsha', 'evalsha']);
  });

  it("reads the server's clock when no clock is injected", async () => {
    const real = new RedisStorage({ url: redis.url });
    try {
      const before = Date.now();
      expect(await real.acquire(KEY, 1, 30_000, 'a')).toEqual({ allowed: true, limit: 1, inFlight: 1 });
      const after = Date.now();
      const expiry = Number(await redis.client().call('PEXPIRETIME', KEY));
      // the server's clock is this machine's: the lease expires 30 s after the call, within it
      expect(expiry).toBeGreaterThanOrEqual(before + 30_000);
      expect(expiry).toBeLessThanOrEqual(after + 30_000);
    } finally {
      await real.close();
    }
  });
});
