import 'reflect-metadata';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import request from 'supertest';
import { RateLimit, RedisStorage, type AlgorithmName, type StorageErrorPolicy } from '../../lib/index.js';
import { ALGORITHM_NAMES } from '../../lib/algorithms/algorithm-registry.js';
import { FakeClock } from '../support/fake-clock.js';
import { startPrivateRedis, type ControllableRedis } from '../support/redis-server.js';
import { createScenarioApp } from '../support/scenario-app.js';
import { keyOf, rulesOf } from '../conformance/limiter.js';

/** Runs PINGs back to back until `done` settles; returns the longest wait. */
async function longestPingWhile(redis: ControllableRedis, done: Promise<unknown>): Promise<number> {
  const pinger = redis.client();
  await pinger.ping();
  let finished = false;
  void done.finally(() => (finished = true));
  let longest = 0;
  while (!finished) {
    const start = performance.now();
    await pinger.ping();
    longest = Math.max(longest, performance.now() - start);
  }
  return longest;
}

describe('what one check may cost Redis', () => {
  let redis: ControllableRedis;
  beforeAll(async () => {
    // a server of its own: the test reads SLOWLOG and sets maxmemory
    redis = await startPrivateRedis();
  });
  afterAll(() => redis?.stop());

  it('sliding-window-log: a request of cost 50,000 is one entry, so Redis time and bytes do not grow with cost', async () => {
    const admin = redis.client();
    await admin.config('SET', 'slowlog-log-slower-than', '0');
    await admin.config('SET', 'slowlog-max-len', '100000');
    await admin.slowlog('RESET');
    const clock = new FakeClock(Date.UTC(2030, 0, 1, 10));
    const storage = new RedisStorage({ url: redis.url, clock: clock.now, blockCache: false });
    const [rule] = rulesOf([{ rate: '100000/hour', algorithm: 'sliding-window-log' }]);
    const checks = [{ key: keyOf('heavy', rule), rule }];
    try {
      await storage.check(checks, 1); // connected, script loaded
      const verdicts: boolean[] = [];
      const heavy = (async () => {
        for (let i = 0; i < 6; i++) {
          clock.advance(1_000);
          verdicts.push((await storage.check(checks, 50_000)).allowed);
        }
      })();
      const longestPing = await longestPingWhile(redis, heavy);
      await heavy;

      expect(verdicts).toEqual([true, false, false, false, false, false]); // 1 + 50,000 + 50,000 > 100,000
      clock.advance(3_600_000);
      expect((await storage.check(checks, 50_000)).allowed).toBe(true);
      clock.advance(1_000);
      expect((await storage.check(checks, 50_000)).allowed).toBe(true);
      const denied = await storage.check(checks, 1);
      expect(denied.decisions[0]).toMatchObject({ allowed: false, remaining: 0, retryAfterMs: 3_600_000 - 1_000 });

      // generous: a loaded 2-core machine delays a PING by tens of ms; the SLOWLOG bound below is the exact one
      expect(longestPing).toBeLessThan(50);
      expect(Number(await admin.call('MEMORY', 'USAGE', checks[0].key))).toBeLessThan(16 * 1024);
      // every script call, as Redis timed it (µs)
      const log = (await admin.slowlog('GET', 1_000)) as [number, number, number, string[]][];
      const scripts = log.filter((entry) => /^EVAL/i.test(entry[3][0]));
      expect(scripts.length).toBeGreaterThanOrEqual(9);
      for (const entry of scripts) expect(entry[2]).toBeLessThan(5_000);
    } finally {
      await admin.config('SET', 'slowlog-log-slower-than', '10000');
      await storage.close();
    }
  });

  describe('a Redis that is out of memory (maxmemory with noeviction)', () => {
    const clock = new FakeClock(Date.UTC(2030, 0, 1, 11));
    afterEach(async () => {
      await redis.client().config('SET', 'maxmemory', '0');
    });

    it.each(ALGORITHM_NAMES)('%s: refuses the check up front and writes nothing', async (algorithm: AlgorithmName) => {
      const admin = redis.client();
      await redis.flush();
      const storage = new RedisStorage({ url: redis.url, clock: clock.now, blockCache: false });
      const [rule] = rulesOf([{ rate: '5/minute', algorithm }]);
      const existing = [{ key: keyOf('old', rule), rule }];
      const fresh = [{ key: keyOf('new', rule), rule }];
      try {
        await storage.check(existing, 2);
        // past the window: a sliding log has expired entries to drop, every algorithm state to renew
        clock.advance(120_000);
        const before = await admin.dumpBuffer(existing[0].key);
        await admin.config('SET', 'maxmemory-policy', 'noeviction');
        await admin.config('SET', 'maxmemory', '1');

        await expect(storage.check(existing, 1)).rejects.toThrow(/OOM/);
        await expect(storage.check(fresh, 1)).rejects.toThrow(/OOM/);

        await admin.config('SET', 'maxmemory', '0');
        expect(await admin.dumpBuffer(existing[0].key)).toEqual(before);
        expect(await admin.exists(fresh[0].key)).toBe(0);
      } finally {
        await storage.close();
      }
    });

    @Controller()
    class QuoteController {
      @Get('deny')
      @RateLimit('100/minute', { onStorageError: 'deny' })
      deny() {
        return { ok: true };
      }

      @Get('allow')
      @RateLimit('100/minute', { onStorageError: 'allow' })
      allow() {
        return { ok: true };
      }
    }

    it.each<[StorageErrorPolicy, number]>([
      ['deny', 503],
      ['allow', 200],
    ])("answers by the route's failure policy: %s gives %i", async (policy, status) => {
      let app: INestApplication | undefined;
      try {
        app = await createScenarioApp([QuoteController], { storage: { type: 'redis', url: redis.url } });
        const http = request(app.getHttpServer());
        await http.get(`/${policy}`).expect(200);
        await redis.client().config('SET', 'maxmemory', '1');
        const answer = await http.get(`/${policy}`);
        expect(answer.status).toBe(status);
        if (status === 503) expect(answer.headers['retry-after']).toMatch(/^\d+$/);
      } finally {
        await redis.client().config('SET', 'maxmemory', '0');
        await app?.close();
      }
    });
  });
});
