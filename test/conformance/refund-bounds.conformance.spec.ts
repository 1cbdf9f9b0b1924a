import fc from 'fast-check';
import { MemoryStorage, RedisStorage, type AlgorithmName, type RateLimitStorage } from '../../lib/index.js';
import { undrained } from '../../lib/algorithms/undrained.js';
import type { RateLimitRule } from '../../lib/rules/rate-limit-rule.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { operations, rulesOf } from './limiter.js';

/**
 * What `count` does to a limit: checks admitted now, refunded later, often in a later window
 * than they were charged in. Whatever the order, no window may hold more than the limit of the
 * units that still count: a refund gives back only what its charge still holds, so it never
 * makes room that the charge did not take. Each algorithm's own bound, on every storage:
 *
 * - fixed window: the units counted in each window are at most N;
 * - sliding log: in any window-long interval, at most N;
 * - sliding counter: at each admission, the previous window's count, weighted, plus this one's,
 *   at most N (its approximation of the log);
 * - token and leaky bucket, GCRA: in any interval [a, b], at most burst + (b - a) × rate.
 *
 * A refund that took units out of a later window (the old fault: 10 failures admitted within
 * one 5-per-10 s window) breaks the first three; one that gave a bucket back what had drained
 * already breaks the last.
 */
const RULES: Record<AlgorithmName, RateLimitRule> = {
  'fixed-window': rulesOf([{ rate: '5/10 seconds', algorithm: 'fixed-window' }])[0],
  'sliding-window-log': rulesOf([{ rate: '4/2 seconds', algorithm: 'sliding-window-log' }])[0],
  'sliding-window-counter': rulesOf([{ rate: '5/3 seconds', algorithm: 'sliding-window-counter' }])[0],
  'token-bucket': rulesOf([{ rate: '3/second', algorithm: 'token-bucket', burst: 4 }])[0],
  'leaky-bucket': rulesOf([{ rate: '7/3 seconds', algorithm: 'leaky-bucket', burst: 5 }])[0],
  gcra: rulesOf([{ rate: '3/second', algorithm: 'gcra', burst: 2 }])[0],
};
const ALGORITHMS = Object.keys(RULES) as AlgorithmName[];

/** An admitted check: when (the trace's clock), what it cost, and what still counts of it. */
interface Charge {
  readonly at: number;
  readonly cost: number;
  readonly chargedAt: number;
  counts: number;
}

const step = fc.record({
  // close requests, and now and then a pause across a window edge
  dt: fc.oneof({ arbitrary: fc.integer({ min: 0, max: 150 }), weight: 4 }, { arbitrary: fc.integer({ min: 0, max: 6_000 }), weight: 1 }),
  cost: fc.oneof({ arbitrary: fc.constant(1), weight: 4 }, { arbitrary: fc.integer({ min: 1, max: 3 }), weight: 1 }),
  refund: fc.boolean(),
  pick: fc.nat(),
});
const trace = fc.record({ start: fc.integer({ min: 0, max: 20_000 }), steps: fc.array(step, { minLength: 10, maxLength: 60 }) });

/** The algorithm's bound on `charges` (with what still counts of each), checked at an admission at `now`. */
function expectWithinBound(rule: RateLimitRule, charges: readonly Charge[], now: number, where: string): void {
  const { limit, windowMs, burst } = rule;
  const sum = (from: number, to: number) => charges.filter((c) => c.at >= from && c.at <= to).reduce((total, c) => total + c.counts, 0);
  let worst = 0;
  let bound = limit;
  switch (rule.algorithm) {
    case 'fixed-window': {
      const start = now - (now % windowMs);
      worst = sum(start, start + windowMs - 1);
      break;
    }
    case 'sliding-window-log':
      worst = sum(now - windowMs + 1, now);
      break;
    case 'sliding-window-counter': {
      const start = now - (now % windowMs);
      const previous = sum(start - windowMs, start - 1);
      worst = (previous * (windowMs - (now - start))) / windowMs + sum(start, now);
      break;
    }
    default:
      // every interval that ends now: it is where the last admission could overshoot
      for (const { at } of charges) {
        const units = sum(at, now);
        const allowed = burst + ((now - at) * limit) / windowMs;
        if (units - allowed > worst - bound) [worst, bound] = [units, allowed];
      }
  }
  expect({ where, within: worst <= bound + 1e-9, worst, bound }).toEqual({ where, within: true, worst, bound });
}

async function playBoundTraces(create: (clock: FakeClock) => RateLimitStorage, algorithm: AlgorithmName, numRuns: number): Promise<{ refunds: number; acrossWindows: number }> {
  const rule = RULES[algorithm];
  const clock = new FakeClock();
  const storage = create(clock);
  let run = 0;
  let refunds = 0;
  let acrossWindows = 0;
  try {
    await fc.assert(
      fc.asyncProperty(trace, async ({ start, steps }) => {
        const id = ++run;
        clock.time = Date.UTC(2030, 0, 1) + id * 1_000_000 + start;
        const limiter = operations(storage, [rule], `${algorithm}-${id}`);
        const charges: Charge[] = [];
        for (const [i, { dt, cost, refund, pick }] of steps.entries()) {
          clock.advance(dt);
          const open = charges.filter((c) => c.counts === c.cost);
          if (refund && open.length > 0) {
            const charge = open[pick % open.length];
            const now = clock.now();
            // what counts of it after the refund, as each algorithm defines it
            if (rule.algorithm === 'fixed-window') {
              if (Math.floor(charge.chargedAt / rule.windowMs) === Math.floor(now / rule.windowMs)) charge.counts = 0;
            } else if (rule.algorithm === 'sliding-window-log') {
              if (charge.chargedAt > now - rule.windowMs) charge.counts = 0;
            } else if (rule.algorithm === 'sliding-window-counter') {
              if (Math.floor(charge.chargedAt / rule.windowMs) >= Math.floor(now / rule.windowMs) - 1) charge.counts = 0;
            } else {
              charge.counts = charge.cost - Math.max(0, undrained(now, charge.chargedAt, rule, charge.cost));
            }
            if (Math.floor(charge.chargedAt / rule.windowMs) !== Math.floor(now / rule.windowMs)) acrossWindows++;
            await limiter.refund(charge.cost, charge.chargedAt);
            refunds++;
            continue;
          }
          const result = await limiter.check(cost);
          if (!result.allowed) continue;
          charges.push({ at: clock.now(), cost, chargedAt: result.chargedAt!, counts: cost });
          expectWithinBound(rule, charges, clock.now(), `${algorithm}, step ${i} of run ${id}`);
        }
      }),
      { numRuns, ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED), path: process.env.FC_PATH } : {}) },
    );
  } finally {
    await storage.close?.();
  }
  return { refunds, acrossWindows };
}

describe('refunds never make room a charge did not take', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  const storages: [string, (clock: FakeClock) => RateLimitStorage][] = [
    ['memory', (clock) => new MemoryStorage({ clock: clock.now })],
    ['redis', (clock) => new RedisStorage({ url: redis.url, clock: clock.now, blockCache: false })],
  ];

  describe.each(storages)('on %s', (_, create) => {
    it.each(ALGORITHMS)('%s: within its bound at every admission of random traces of checks and refunds', async (algorithm) => {
      const { refunds, acrossWindows } = await playBoundTraces(create, algorithm, 150);
      expect(refunds).toBeGreaterThan(300);
      expect(acrossWindows).toBeGreaterThan(30); // the refunds that used to make room in a later window
    }, 60_000);
  });

  const clock = new FakeClock();
  it.each([
    ['memory', () => new MemoryStorage({ clock: clock.now })],
    ['redis', () => new RedisStorage({ url: redis.url, clock: clock.now, blockCache: false })],
  ] as [string, () => RateLimitStorage][])('on %s: five slow successes of window k refunded in window k+1 leave window k+1 five failures, not ten', async (name, create) => {
    const storage = create();
    try {
      const fixed = operations(storage, [RULES['fixed-window']], `slow-${name}`);
      clock.time = Date.UTC(2030, 0, 1, 0, 0, 8); // 2 s before a 10 s window ends
      const successes = [];
      for (let i = 0; i < 5; i++) successes.push((await fixed.check()).chargedAt!);
      clock.advance(2_000); // window k+1
      let failures = 0;
      for (let i = 0; i < 5; i++) if ((await fixed.check()).allowed) failures++;
      for (const chargedAt of successes) await fixed.refund(1, chargedAt); // the slow successes end now
      for (let i = 0; i < 5; i++) if ((await fixed.check()).allowed) failures++;
      expect(failures).toBe(5);
    } finally {
      await storage.close?.();
    }
  });
});
