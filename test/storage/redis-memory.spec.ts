import type { Redis } from 'ioredis';
import { MemoryStorage, parseRate, RedisStorage, type RateLimitCheck, type RateLimitResult } from '../../lib/index.js';
import { storageKeyBase } from '../../lib/keys/storage-key.js';
import { bindRules } from '../../lib/rules/bind-rules.js';
import { routeId } from '../../lib/rules/route-id.js';
import { FakeClock } from '../support/fake-clock.js';
import { startPrivateRedis, type TestRedis } from '../support/redis-server.js';

/** 15 characters, as the default key names an IPv4 client. */
const IDENTITY = 'ip:10.100.10.10';
const ROUTE = 'QuoteController.quote';

/**
 * Redis memory per key, which is deterministic for a given key and value: a private server,
 * because Redis reuses the argument objects of earlier script commands, server-wide, and a
 * value written into a larger one left by another test's script would count that size.
 */
describe('fixed-window keys in Redis: memory per key and the state', () => {
  let redis: TestRedis;
  let admin: Redis;
  let storage: RedisStorage;
  const clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 0, 10));

  beforeAll(async () => {
    redis = await startPrivateRedis();
    admin = redis.client();
    storage = new RedisStorage({ url: redis.url, clock: clock.now, blockCache: false });
    await storage.init();
  });
  afterAll(async () => {
    await storage?.close();
    await redis?.stop();
  });

  /** The check an app makes for IDENTITY on the route, with the route's default bucket. */
  function checkOf(rate: string): RateLimitCheck {
    const [rule] = bindRules(parseRate(rate), { name: ROUTE, bucket: routeId(ROUTE), algorithm: 'fixed-window' });
    return { key: storageKeyBase('rl', IDENTITY) + rule.keySuffix, rule };
  }

  const usage = async (key: string) => Number(await admin.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));

  it('is at most 100 bytes for a 15-character identity, and stays so as the window fills', async () => {
    const check = checkOf('100/minute');
    expect(IDENTITY).toHaveLength(15);
    expect(check.key).toBe('rl:{ip:10.100.10.10}:NrjO:fw1m');
    await storage.check([check], 1);
    expect(await usage(check.key)).toBeLessThanOrEqual(100);
    for (let i = 0; i < 98; i++) await storage.check([check], 1);
    expect(await usage(check.key)).toBeLessThanOrEqual(100);
    expect(await admin.get(check.key)).toMatch(/^99\d{9}$/);
  });

  it('is at most 100 bytes for keys of up to 44 characters: Redis keeps the state as a number', async () => {
    // a 28-character identity: an API key, as HeaderKeyResolver names it
    const identity = 'x-api-key:0123456789abcdefgh';
    const { rule } = checkOf('100/30 seconds');
    const key = storageKeyBase('rl', identity) + rule.keySuffix;
    expect(key).toHaveLength(44);
    await storage.check([{ key, rule }], 1);
    expect(await admin.object('ENCODING', key)).toBe('int');
    expect(await usage(key)).toBeLessThanOrEqual(100);
  });

  it('stores the count, then the number of the window, in 9 digits', async () => {
    const check = checkOf('5/second');
    await redis.flush();
    await storage.check([check], 1);
    await storage.check([check], 2);
    const windowNumber = Math.floor(clock.time / 1_000) + 1; // its end, in windows since the epoch
    expect(await admin.get(check.key)).toBe(`3${String(windowNumber % 1e9).padStart(9, '0')}`);
    expect(Number(await admin.call('PEXPIRETIME', check.key))).toBe(windowNumber * 1_000);
  });

  it('reads back every count as the memory storage holds it, up to the 15-digit limit', async () => {
    const memory = new MemoryStorage({ clock: clock.now });
    const [rule] = bindRules(parseRate('999999999999999/hour'), { name: 'big', bucket: 'big', algorithm: 'fixed-window' });
    const numbers = (result: RateLimitResult) => result.decisions.map((d) => [d.allowed, d.remaining, d.retryAfterMs, d.resetMs]);
    // 0 has a leading zero; up to 9,007,198 the digits are exact as one double; past 2^63 Redis keeps a string
    for (const count of [0, 1, 9_007_198, 9_007_199, 9_007_200, 9_223_372_036, 9_223_372_037, 2 ** 53 - 1, 999_999_999_999_998]) {
      const key = `rl:{big}:c${count}`;
      const checks = [{ key, rule }];
      await storage.adjust(checks, count + 1);
      memory.adjust(checks, count + 1);
      await storage.adjust(checks, -1);
      memory.adjust(checks, -1);
      expect(await admin.get(key)).toBe(`${count}${String(Math.floor(clock.time / 3_600_000 + 1) % 1e9).padStart(9, '0')}`);
      expect({ count, redis: numbers(await storage.check(checks, 1)) }).toEqual({ count, redis: numbers(memory.check(checks, 1)) });
      expect({ count, redis: numbers(await storage.peek(checks, 1)) }).toEqual({ count, redis: numbers(memory.peek(checks, 1)) });
    }
  });
});
