import { ALGORITHM_NAMES } from '../../lib/algorithms/algorithm-registry.js';
import type { AlgorithmName, RateLimitStorage } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { closeStorage, type StorageTarget } from '../support/storage-targets.js';
import { brief, checker, keyOf, operations, rulesOf, verdict } from './limiter.js';

const T0 = Date.UTC(2030, 0, 1); // aligned to every window used below

/**
 * The conformance suite: scripted traces with hand-computed answers, written once and run
 * unchanged on every storage. A storage conforms when it gives these exact decisions.
 * `reset` empties the backing store before each test.
 */
export function describeConformance(target: () => StorageTarget, reset: () => Promise<void>): void {
  let clock: FakeClock;
  let storage: RateLimitStorage;
  beforeEach(async () => {
    await reset();
    clock = new FakeClock(T0);
    storage = target().create(clock);
  });
  afterEach(() => closeStorage(storage));

  const limiter = (algorithm: AlgorithmName, rate: string, burst?: number) =>
    checker(storage, rulesOf([{ rate, algorithm, burst }]));

  it('fixed-window: admits a burst of 2N across a window boundary (its known weakness)', async () => {
    const check = limiter('fixed-window', '5/minute');
    clock.advance(59_900);
    for (const left of [4, 3, 2, 1, 0]) expect(brief(await check())).toEqual([true, left]);
    const denied = (await check()).decisions[0];
    expect([denied.allowed, denied.retryAfterMs, denied.resetMs]).toEqual([false, 100, 100]);
    clock.advance(100);
    for (const left of [4, 3, 2, 1, 0]) expect(brief(await check())).toEqual([true, left]);
  });

  it('sliding-window-log: never more than N in any window-long interval', async () => {
    const check = limiter('sliding-window-log', '5/minute');
    clock.advance(59_900);
    for (const left of [4, 3, 2, 1, 0]) expect(brief(await check())).toEqual([true, left]);
    clock.advance(100); // where a fixed window would reopen
    const denied = (await check()).decisions[0];
    expect([denied.allowed, denied.remaining, denied.retryAfterMs, denied.resetMs]).toEqual([false, 0, 59_900, 59_900]);
    clock.advance(59_899);
    expect((await check()).allowed).toBe(false);
    clock.advance(1); // the five entries at 59.9 s leave the window together
    expect(brief(await check())).toEqual([true, 4]);
  });

  it('sliding-window-log: waits for exactly as many old entries as the cost needs', async () => {
    const check = limiter('sliding-window-log', '5/minute');
    for (let i = 0; i < 5; i++) {
      await check();
      clock.advance(10_000);
    }
    // entries at 0, 10, 20, 30, 40 s; now 50 s. Cost 2 needs the two oldest gone: at 70 s.
    const denied = (await check(2)).decisions[0];
    expect([denied.allowed, denied.remaining, denied.retryAfterMs]).toEqual([false, 0, 20_000]);
    clock.advance(20_000);
    expect(brief(await check(2))).toEqual([true, 0]);
  });

  it("sliding-window-counter: weighs the previous window's count by its overlap", async () => {
    const check = limiter('sliding-window-counter', '10/minute');
    clock.advance(30_000);
    for (let left = 9; left >= 0; left--) expect(brief(await check())).toEqual([true, left]);
    const full = (await check()).decisions[0];
    // next window, once 10 × (remaining overlap) + 1 <= 10: 6 s into it
    expect([full.allowed, full.retryAfterMs, full.resetMs]).toEqual([false, 36_000, 90_000]);
    clock.advance(45_000); // 15 s into the next window: estimate 10 × 45/60 = 7.5
    expect(brief(await check())).toEqual([true, 1]); // 8.5 used
    expect(brief(await check())).toEqual([true, 0]); // 9.5 used
    const smoothed = (await check()).decisions[0];
    // 10 × (45 - t)/60 + 2 + 1 <= 10 once t >= 3 s
    expect([smoothed.allowed, smoothed.remaining, smoothed.retryAfterMs]).toEqual([false, 0, 3_000]);
    clock.advance(3_000);
    expect((await check()).allowed).toBe(true);
  });

  it.each<[AlgorithmName, number]>([
    ['token-bucket', 10],
    ['leaky-bucket', 10],
    ['gcra', 10],
    ['token-bucket', 20],
    ['leaky-bucket', 20],
    ['gcra', 20],
  ])('%s (burst %d): admits a burst, then refills at the rate, and is full again after idling', async (algorithm, burst) => {
    const check = limiter(algorithm, '10/10 seconds', burst);
    for (let left = burst - 1; left >= 0; left--) expect(brief(await check())).toEqual([true, left]);
    const empty = (await check()).decisions[0];
    expect([empty.allowed, empty.remaining, empty.retryAfterMs, empty.resetMs]).toEqual([false, 0, 1_000, burst * 1_000]);
    clock.advance(999);
    expect((await check()).allowed).toBe(false);
    clock.advance(1);
    expect(brief(await check())).toEqual([true, 0]);
    clock.advance(2_500); // 2.5 units back
    expect(brief(await check())).toEqual([true, 1]);
    expect(brief(await check())).toEqual([true, 0]);
    expect((await check()).decisions[0].retryAfterMs).toBe(500);
    clock.advance(600_000);
    expect(brief(await check())).toEqual([true, burst - 1]);
  });

  it.each(ALGORITHM_NAMES)('%s: charges the cost of weighted requests', async (algorithm) => {
    const check = limiter(algorithm, '10/minute');
    for (const left of [7, 4, 1]) expect(brief(await check(3))).toEqual([true, left]);
    const denied = await check(3);
    expect(brief(denied)).toEqual([false, 1]);
    expect(denied.decisions[0].retryAfterMs).toBeGreaterThan(0);
    expect(Number.isFinite(denied.decisions[0].retryAfterMs)).toBe(true);
    expect(brief(await check(1))).toEqual([true, 0]);
  });

  it.each(ALGORITHM_NAMES)('%s: rejects a cost above capacity outright, charging nothing', async (algorithm) => {
    const check = limiter(algorithm, '10/minute');
    const impossible = await check(11);
    expect(brief(impossible)).toEqual([false, 10]);
    expect(impossible.decisions[0].retryAfterMs).toBe(Infinity);
    expect(brief(await check(10))).toEqual([true, 0]);
  });

  it('decides several rules with different algorithms all or nothing', async () => {
    const check = checker(storage, rulesOf([
      { rate: '2/second', algorithm: 'token-bucket' },
      { rate: '3/minute', algorithm: 'fixed-window' },
      { rate: '5/minute', algorithm: 'sliding-window-log' },
    ]));
    const remaining = async () => (await check()).decisions.map((d) => [d.allowed, d.remaining]);
    expect(await remaining()).toEqual([[true, 1], [true, 2], [true, 4]]);
    expect(await remaining()).toEqual([[true, 0], [true, 1], [true, 3]]);
    // the bucket is empty: the others are not charged, and report what they still have
    expect(await remaining()).toEqual([[false, 0], [true, 1], [true, 3]]);
    expect(await remaining()).toEqual([[false, 0], [true, 1], [true, 3]]);
    clock.advance(1_000);
    expect(await remaining()).toEqual([[true, 1], [true, 0], [true, 2]]);
    // the minute is used up: the bucket keeps its token
    expect(await remaining()).toEqual([[true, 1], [false, 0], [true, 2]]);
    clock.advance(59_000); // a new minute; the log still holds the entry from 1 s
    expect(await remaining()).toEqual([[true, 1], [true, 2], [true, 3]]);
  });

  it.each<[AlgorithmName, number, number]>([
    // after one check at T0, then after a second 100 ms later
    ['fixed-window', 10_000, 10_000], // the window's end
    ['sliding-window-log', 10_000, 10_100], // the last entry leaves the window
    ['sliding-window-counter', 20_000, 20_000], // the next window no longer sees this one
    ['token-bucket', 1_000, 2_001], // full again (10 - 8.1 is 1.9000000000000004: the wait rounds up)
    ['leaky-bucket', 1_000, 2_000], // drained
    ['gcra', 1_000, 2_000], // back on schedule
  ])('%s: state expires as soon as it can no longer affect a decision', async (algorithm, ttl, ttlAfterSecond) => {
    const [rule] = rulesOf([{ rate: '10/10 seconds', algorithm }]);
    const check = checker(storage, [rule]);
    const key = keyOf('client', rule);
    expect(brief(await check())).toEqual([true, 9]);
    expect(await target().expiresAt(storage, key)).toBe(T0 + ttl);
    clock.advance(100);
    expect((await check()).allowed).toBe(true);
    expect(await target().expiresAt(storage, key)).toBe(T0 + ttlAfterSecond);
    clock.advance(ttlAfterSecond - 100);
    expect(brief(await check())).toEqual([true, 9]); // as if never seen
  });

  const ops = (algorithm: AlgorithmName, rate: string, options: { burst?: number; blockMs?: number } = {}) =>
    operations(storage, rulesOf([{ rate, algorithm, ...options }]));

  it.each(ALGORITHM_NAMES)('%s: peek answers what a check would, charging nothing', async (algorithm) => {
    const { check, peek } = ops(algorithm, '10/minute');
    await check(3);
    await check(3);
    // remaining is what is left now: nothing was charged
    expect(verdict(await peek())).toEqual([true, 4, 0]);
    expect(verdict(await peek())).toEqual([true, 4, 0]);
    const tooMuch = await peek(5);
    expect([tooMuch.allowed, tooMuch.decisions[0].remaining]).toEqual([false, 4]);
    expect(tooMuch.decisions[0].retryAfterMs).toBeGreaterThan(0);
    expect(brief(await check(4))).toEqual([true, 0]);
    expect((await peek()).allowed).toBe(false);
  });

  it.each(ALGORITHM_NAMES)('%s: reward gives units back, never past a fresh state', async (algorithm) => {
    const { check, reward, peek } = ops(algorithm, '10/minute');
    await check(3);
    await check(3);
    expect(verdict(await reward(2))).toEqual([true, 6, 0]);
    expect(verdict(await peek())).toEqual([true, 6, 0]);
    expect(verdict(await reward(100))).toEqual([true, 10, 0]);
    expect(brief(await check(10))).toEqual([true, 0]);
  });

  it.each(ALGORITHM_NAMES)('%s: a reward reopens an exhausted budget', async (algorithm) => {
    const { check, reward } = ops(algorithm, '5/minute');
    for (let i = 0; i < 5; i++) await check();
    expect((await check()).allowed).toBe(false);
    expect(verdict(await reward())).toEqual([true, 1, 0]);
    expect(brief(await check())).toEqual([true, 0]);
    expect((await check()).allowed).toBe(false);
  });

  it.each<[AlgorithmName, number]>([
    ['fixed-window', 10_000], // the window ends
    ['sliding-window-log', 10_000], // the penalized entry leaves the window
    ['sliding-window-counter', 14_375], // 16 in this window: the next one, once 16 × (1 - t/10) + 1 <= 10
    ['token-bucket', 7_000], // -6 tokens: 7 to refill
    ['leaky-bucket', 7_000], // a level of 16: 7 to drain
    ['gcra', 7_000], // 16 intervals ahead of schedule, 10 tolerated
  ])('%s: a penalty charges past the limit, and the client waits it off', async (algorithm, wait) => {
    const { check, penalize, peek } = ops(algorithm, '10/10 seconds');
    await check();
    expect(verdict(await penalize(15))).toEqual([false, 0, wait]);
    expect(verdict(await peek())).toEqual([false, 0, wait]);
    clock.advance(wait - 1);
    expect((await check()).allowed).toBe(false);
    clock.advance(1);
    expect((await check()).allowed).toBe(true);
  });

  it.each(ALGORITHM_NAMES)('%s: reset forgets usage', async (algorithm) => {
    const { check, reset } = ops(algorithm, '3/minute');
    for (let i = 0; i < 3; i++) await check();
    expect((await check()).allowed).toBe(false);
    await reset();
    expect(brief(await check())).toEqual([true, 2]);
  });

  it.each(ALGORITHM_NAMES)('%s: block denies until it ends, whatever the usage, and then starts fresh', async (algorithm) => {
    const { check, peek, reward, block, reset } = ops(algorithm, '10/minute');
    await check();
    await block(60_000);
    expect(verdict(await check())).toEqual([false, 0, 60_000]);
    expect(verdict(await peek())).toEqual([false, 0, 60_000]);
    // a refund does not lift a block
    expect(verdict(await reward(5))).toEqual([false, 0, 60_000]);
    clock.advance(59_999);
    expect(verdict(await check())).toEqual([false, 0, 1]);
    clock.advance(1);
    expect(brief(await check())).toEqual([true, 9]);
    await block(1_000);
    await reset(); // a reset lifts it
    expect(brief(await check())).toEqual([true, 9]);
  });

  it.each(ALGORITHM_NAMES)('%s: blockFor keeps a denied client denied for its duration, not longer', async (algorithm) => {
    const check = checker(storage, rulesOf([{ rate: '3/10 seconds', algorithm, blockMs: 900_000 }]));
    for (let i = 0; i < 3; i++) expect((await check()).allowed).toBe(true);
    const denied = (await check()).decisions[0];
    expect([denied.allowed, denied.remaining, denied.retryAfterMs, denied.resetMs]).toEqual([false, 0, 900_000, 900_000]);
    clock.advance(60_000); // the rate alone would admit by now
    // its own denials do not extend the block
    expect(verdict(await check())).toEqual([false, 0, 840_000]);
    clock.advance(840_000);
    expect(brief(await check())).toEqual([true, 2]);
  });

  it.each(ALGORITHM_NAMES)('%s: blockFor does not block a request no wait could admit', async (algorithm) => {
    const check = checker(storage, rulesOf([{ rate: '3/10 seconds', algorithm, blockMs: 900_000 }]));
    expect((await check(4)).decisions[0].retryAfterMs).toBe(Infinity);
    expect(brief(await check())).toEqual([true, 2]);
  });

  it('a blocked rule denies the whole check, and the other rules are not charged', async () => {
    const rules = rulesOf([
      { rate: '5/minute', algorithm: 'fixed-window' },
      { rate: '5/minute', algorithm: 'token-bucket', blockMs: 30_000 },
    ]);
    const both = operations(storage, rules);
    const bucketOnly = operations(storage, [rules[1]]);
    await bucketOnly.check(5);
    const denied = await both.check();
    expect(denied.decisions.map((d) => [d.allowed, d.remaining, d.retryAfterMs])).toEqual([[true, 5, 0], [false, 0, 30_000]]);
    expect((await both.peek()).decisions.map((d) => [d.allowed, d.remaining])).toEqual([[true, 5], [false, 0]]);
  });
}
