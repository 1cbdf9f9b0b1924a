import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Controller, Get, Logger, type INestApplication } from '@nestjs/common';
import type { Redis } from 'ioredis';
import {
  HeaderKeyResolver,
  RateLimit,
  RedisStorage,
  type AlgorithmName,
  type RateLimitResult,
} from '../../lib/index.js';
import type { RateLimitRule } from '../../lib/rules/rate-limit-rule.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp } from '../support/scenario-app.js';
import { rulesOf } from '../conformance/limiter.js';

const ALGORITHMS: AlgorithmName[] = ['fixed-window', 'sliding-window-log', 'sliding-window-counter', 'token-bucket', 'leaky-bucket', 'gcra'];
const RULES = new Map<AlgorithmName, RateLimitRule>(
  ALGORITHMS.map((algorithm) => [algorithm, rulesOf([{ rate: '3/minute', algorithm }])[0]]),
);
const BATCH = 50;
const VICTIM = 17;

/** What a key under the prefix may hold that the script cannot read, and how to put it there. */
const BAD_STATE: { name: string; algorithm: AlgorithmName; write: (client: Redis, key: string, now: number) => Promise<unknown> }[] = [
  {
    name: 'a hash where a packed string belongs (the format earlier versions wrote)',
    algorithm: 'fixed-window',
    write: (client, key) => client.hset(key, 'count', '2', 'window_end', '1'),
  },
  {
    name: 'the two packed doubles (window end, count) earlier versions stored for a fixed window',
    algorithm: 'fixed-window',
    write: (client, key, now) => {
      const state = Buffer.alloc(16);
      state.writeDoubleLE(now - (now % 60_000) + 60_000);
      state.writeDoubleLE(2, 8);
      return client.set(key, state);
    },
  },
  {
    name: "a fixed window's digits with a count that is not a number",
    algorithm: 'fixed-window',
    write: (client, key) => client.set(key, '1e+e000000001'),
  },
  {
    name: 'a truncated packed string',
    algorithm: 'token-bucket',
    write: (client, key) => client.set(key, Buffer.from([1, 2, 3, 4, 5])),
  },
  {
    name: 'a packed string of the right length holding NaN',
    algorithm: 'gcra',
    write: (client, key) => client.set(key, Buffer.from([0, 0, 0, 0, 0, 0, 0xf8, 0x7f])),
  },
  {
    name: "a string where the sliding log's list belongs",
    algorithm: 'sliding-window-log',
    write: (client, key) => client.set(key, 'not a list'),
  },
  {
    name: 'a list with an entry the sliding log cannot read',
    algorithm: 'sliding-window-log',
    write: (client, key) => client.rpush(key, 'junk'),
  },
  {
    name: 'a sorted set where the sliding log keeps a list (the format earlier versions wrote)',
    algorithm: 'sliding-window-log',
    write: (client, key, now) => client.zadd(key, now, 'junk'),
  },
];

/** The decision numbers of a result, for exact comparisons. */
const numbers = (result: RateLimitResult) => result.decisions.map((d) => [d.allowed, d.remaining, d.retryAfterMs, d.resetMs]);

describe('state a check cannot read', () => {
  let redis: TestRedis;
  let admin: Redis;
  beforeAll(async () => {
    redis = await startRedis();
    admin = redis.client();
  });
  afterAll(() => redis?.stop());
  afterEach(() => jest.restoreAllMocks());

  /**
   * 50 checks in one batch: clients of every algorithm, some already at their limit. Returns
   * the results, in order, after `prepare` had its chance to spoil the victim's key.
   */
  async function runBatch(prefix: string, clock: FakeClock, victimAlgorithm: AlgorithmName, prepare?: (key: string) => Promise<unknown>) {
    const storage = new RedisStorage({ url: redis.url, clock: clock.now, blockCache: false });
    const checksOf = (i: number) => {
      const rule = RULES.get(i === VICTIM ? victimAlgorithm : ALGORITHMS[i % ALGORITHMS.length])!;
      return [{ key: `${prefix}:{c${i}}:${rule.keySuffix}`, rule }];
    };
    try {
      // earlier traffic: client i has used i % 4 of its 3 (the fourth is denied)
      for (let i = 0; i < BATCH; i++) for (let n = 0; n < i % 4; n++) await storage.check(checksOf(i), 1);
      await admin.del(checksOf(VICTIM)[0].key);
      await prepare?.(checksOf(VICTIM)[0].key);
      clock.advance(1_000);
      const results = await Promise.allSettled(Array.from({ length: BATCH }, (_, i) => storage.check(checksOf(i), 1)));
      const again = await storage.check(checksOf(VICTIM), 1);
      return { results, again, victimKey: checksOf(VICTIM)[0].key };
    } finally {
      await storage.close();
    }
  }

  it.each(BAD_STATE)('$name: the other 49 checks of its batch are decided as if it were not there', async ({ algorithm, write }) => {
    await redis.flush();
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    const start = Date.UTC(2030, 0, 1, 9);
    const reference = await runBatch('ref', new FakeClock(start), algorithm);
    const spoiled = await runBatch('bad', new FakeClock(start), algorithm, (key) => write(admin, key, start));

    expect(spoiled.results.every((r) => r.status === 'fulfilled')).toBe(true);
    const decided = (results: typeof spoiled.results) =>
      results.map((r) => numbers((r as PromiseFulfilledResult<RateLimitResult>).value));
    expect(decided(spoiled.results)).toEqual(decided(reference.results));
    // the victim was treated as a new client (the reference had deleted its state), and healed
    expect(numbers((spoiled.results[VICTIM] as PromiseFulfilledResult<RateLimitResult>).value)[0].slice(0, 2)).toEqual([true, 2]);
    expect(numbers(spoiled.again)).toEqual(numbers(reference.again));
    expect(numbers(spoiled.again)[0].slice(0, 2)).toEqual([true, 1]);
    expect(warn.mock.calls.map(([message]) => String(message)).filter((m) => m.includes(spoiled.victimKey))).toHaveLength(1);
  });

  describe('behind the guard, on a deny route', () => {
    @Controller()
    class LoginController {
      @Get('login')
      @RateLimit('1000/minute', { key: new HeaderKeyResolver('x-client'), bucket: 'login', onStorageError: 'deny' })
      login() {
        return { ok: true };
      }
    }

    let app: INestApplication;
    afterEach(() => app?.close());

    it('answers 20 other clients as usual while the victim is hit, and the victim from its first request on', async () => {
      await redis.flush();
      jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
      // a timeout would be a 503 too: give a loaded machine all the time it needs, so only a failure counts
      app = await createScenarioApp([LoginController], { storage: { type: 'redis', url: redis.url }, storageTimeout: 5_000 });
      await app.listen(0, '127.0.0.1');
      const base = await app.getUrl();
      const victimKey = 'rl:{x-client:victim}:login:fw1m';
      const get = async (client: string) => {
        const response = await fetch(`${base}/login`, { headers: { 'x-client': client } });
        await response.arrayBuffer();
        return { status: response.status, ratelimit: response.headers.get('ratelimit') };
      };

      const others: number[] = [];
      const victim: (string | null)[] = [];
      for (let round = 0; round < 5; round++) {
        await admin.del(victimKey);
        await admin.hset(victimKey, 'count', '1');
        const answers = await Promise.all([get('victim'), ...Array.from({ length: 20 }, (_, i) => get(`client-${i}`))]);
        expect(answers[0].status).toBe(200);
        victim.push(answers[0].ratelimit);
        others.push(...answers.slice(1).map((a) => a.status));
      }
      expect(others).toEqual(new Array(100).fill(200));
      // each round the victim starts afresh: its first check heals the key
      for (const header of victim) expect(header).toMatch(/^"login";r=999;t=\d+$/);
      const next = await get('victim');
      expect(next.ratelimit).toMatch(/^"login";r=998;t=\d+$/);
    });
  });
});
