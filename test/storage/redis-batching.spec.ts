import { CheckFailedError, MemoryStorage, RedisStorage, type RateLimitResult, type RateLimitStorage } from '../../lib/index.js';
import { keyOf, rulesOf } from '../conformance/limiter.js';
import { scriptCalls } from '../support/assertions.js';
import { FakeClock } from '../support/fake-clock.js';
import { startPrivateRedis, type TestRedis } from '../support/redis-server.js';

const T0 = Date.UTC(2030, 0, 1);
const decisions = (result: RateLimitResult) => result.decisions.map((d) => [d.allowed, d.remaining, d.retryAfterMs, d.resetMs]);

describe('RedisStorage batches the checks of one event-loop turn', () => {
  let redis: TestRedis;
  let storage: RedisStorage | undefined;
  const clock = new FakeClock(T0);
  beforeAll(async () => {
    redis = await startPrivateRedis(); // counts script calls server-wide: a server of its own
  });
  afterAll(() => redis?.stop());
  beforeEach(async () => {
    clock.time = T0;
    await redis.flush();
    await redis.client().config('RESETSTAT');
  });
  afterEach(async () => {
    await storage?.close();
    storage = undefined;
  });
  const scriptCallsNow = async () => scriptCalls(await redis.client().info('commandstats'));
  const create = () => (storage = new RedisStorage({ url: redis.url, clock: clock.now, blockCache: false }));

  it('in one script call, in which each check sees the checks before it', async () => {
    const redisStorage = create();
    await redisStorage.init();
    const [rule] = rulesOf([{ rate: '5/minute', algorithm: 'fixed-window' }]);
    const checks = [{ key: keyOf('one', rule), rule }];
    const results = await Promise.all(Array.from({ length: 8 }, () => redisStorage.check(checks, 1)));
    expect(results.map((r) => [r.allowed, r.decisions[0].remaining])).toEqual([
      [true, 4], [true, 3], [true, 2], [true, 1], [true, 0], [false, 0], [false, 0], [false, 0],
    ]);
    expect(await scriptCallsNow()).toBe(1);
  });

  it('deciding a mixed batch (algorithms, several rules, costs, one key twice) exactly as one check at a time', async () => {
    const redisStorage = create();
    await redisStorage.init();
    const [fw, gcra, tb, log] = rulesOf([
      { rate: '5/minute', algorithm: 'fixed-window' },
      { rate: '10/minute', algorithm: 'gcra', burst: 4 },
      { rate: '3/second', algorithm: 'token-bucket' },
      { rate: '4/minute', algorithm: 'sliding-window-log' },
    ]);
    const batch: [{ key: string; rule: typeof fw }[], number][] = [
      [[{ key: keyOf('a', fw), rule: fw }], 1],
      [[{ key: keyOf('b', gcra), rule: gcra }], 3],
      [[{ key: keyOf('c', fw), rule: fw }, { key: keyOf('c', tb), rule: tb }], 2],
      [[{ key: keyOf('b', gcra), rule: gcra }], 2], // denied: 1 of 4 left
      [[{ key: keyOf('c', log), rule: log }, { key: keyOf('c', tb), rule: tb }], 2], // tb has 1: denied, log not charged
      [[{ key: keyOf('a', fw), rule: fw }], 4],
      [[{ key: keyOf('a', fw), rule: fw }], 1], // over: 5 used
    ];
    const memory: RateLimitStorage = new MemoryStorage({ clock: clock.now });
    const expected: RateLimitResult[] = [];
    for (const [checks, cost] of batch) expected.push(await memory.check(checks, cost));

    const results = await Promise.all(batch.map(([checks, cost]) => redisStorage.check(checks, cost)));
    expect(results.map(decisions)).toEqual(expected.map(decisions));
    expect(results.map((r) => r.allowed)).toEqual([true, true, true, false, false, true, false]);
    expect(await scriptCallsNow()).toBe(1);
  });

  it('in calls of at most 128 checks', async () => {
    const redisStorage = create();
    await redisStorage.init();
    const [rule] = rulesOf([{ rate: '1000/minute', algorithm: 'gcra' }]);
    const results = await Promise.all(Array.from({ length: 300 }, (_, i) => redisStorage.check([{ key: keyOf(`c${i}`, rule), rule }], 1)));
    expect(results.every((r) => r.allowed)).toBe(true);
    expect(await scriptCallsNow()).toBe(3);
  });

  it('and a new batch when an injected clock moves within the turn, so each check has its own instant', async () => {
    const redisStorage = create();
    await redisStorage.init();
    const [rule] = rulesOf([{ rate: '1/second', algorithm: 'fixed-window' }]);
    const checks = [{ key: keyOf('ticking', rule), rule }];
    const first = redisStorage.check(checks, 1);
    clock.advance(1_000); // the next window
    const second = redisStorage.check(checks, 1);
    expect([(await first).allowed, (await second).allowed]).toEqual([true, true]);
    expect(await scriptCallsNow()).toBe(2);
  });

  it('failing every check of a batch that Redis refuses as a whole, each with the error', async () => {
    const redisStorage = create();
    await redisStorage.init();
    const [rule] = rulesOf([{ rate: '5/minute', algorithm: 'fixed-window' }]);
    const admin = redis.client();
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1');
    try {
      const answers = await Promise.allSettled(
        ['one', 'two', 'three'].map((client) => redisStorage.check([{ key: keyOf(client, rule), rule }], 1)),
      );
      expect(answers.map((a) => a.status)).toEqual(['rejected', 'rejected', 'rejected']);
      for (const answer of answers) expect(String((answer as PromiseRejectedResult).reason)).toMatch(/OOM/);
      expect(await scriptCallsNow()).toBe(0); // refused before it ran: one call, no script executed
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
  });

  it('deciding the other checks of a batch when one fails on its own', async () => {
    const redisStorage = create();
    const [rule] = rulesOf([{ rate: '5/minute', algorithm: 'fixed-window' }]);
    // unreadable state heals (see unreadable-state.spec.ts); a rule the script cannot even
    // compare with fails its own check, and that alone
    const broken = { ...rule, limit: 'not a number' as unknown as number };
    const answers = await Promise.allSettled([
      redisStorage.check([{ key: keyOf('one', rule), rule }], 1),
      redisStorage.check([{ key: keyOf('two', broken), rule: broken }], 1),
      redisStorage.check([{ key: keyOf('three', rule), rule }], 1),
    ]);
    expect(answers.map((a) => a.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((answers[1] as PromiseRejectedResult).reason).toBeInstanceOf(CheckFailedError);
    expect(await scriptCallsNow()).toBe(1);
  });
});
