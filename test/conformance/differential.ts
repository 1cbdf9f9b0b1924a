import fc from 'fast-check';
import { MemoryStorage, type RateLimitResult, type RateLimitStorage } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { operations, rulesOf, type RuleSpec } from './limiter.js';

/**
 * Randomized traces of (time, client, cost, rules): memory and Redis must agree on every
 * decision. Memory is the reference; any other storage is held to it step by step.
 */
const RULE_SETS: readonly (readonly RuleSpec[])[] = [
  [{ rate: '3/second', algorithm: 'fixed-window' }],
  [{ rate: '4/2 seconds', algorithm: 'sliding-window-log' }],
  [{ rate: '5/3 seconds', algorithm: 'sliding-window-counter' }],
  [{ rate: '3/second', algorithm: 'sliding-window-counter' }],
  [{ rate: '3/second', algorithm: 'token-bucket' }],
  [{ rate: '7/3 seconds', algorithm: 'token-bucket', burst: 4 }],
  [{ rate: '3/second', algorithm: 'leaky-bucket' }],
  [{ rate: '7/3 seconds', algorithm: 'leaky-bucket', burst: 5 }],
  [{ rate: '3/second', algorithm: 'gcra' }],
  [{ rate: '7/3 seconds', algorithm: 'gcra', burst: 2 }],
  [
    { rate: '2/second', algorithm: 'gcra' },
    { rate: '5/5 seconds', algorithm: 'sliding-window-counter' },
  ],
  [
    { rate: '3/second', algorithm: 'token-bucket', burst: 3 },
    { rate: '6/4 seconds', algorithm: 'sliding-window-log' },
    { rate: '8/10 seconds', algorithm: 'fixed-window' },
  ],
  [
    { rate: '4/2 seconds', algorithm: 'leaky-bucket' },
    { rate: '9/7 seconds', algorithm: 'fixed-window' },
  ],
  // blockFor, alone and beside a rule without it
  [{ rate: '3/second', algorithm: 'sliding-window-log', blockMs: 1_500 }],
  [
    { rate: '4/2 seconds', algorithm: 'gcra', blockMs: 700 },
    { rate: '6/4 seconds', algorithm: 'sliding-window-counter' },
  ],
  // followed by the limit advisor: attempts counted whatever the verdict, beside rules that are not
  [{ rate: '3/second', algorithm: 'fixed-window', observed: true }],
  [
    { rate: '3/second', algorithm: 'token-bucket', observed: true },
    { rate: '5/3 seconds', algorithm: 'fixed-window' },
    { rate: '6/4 seconds', algorithm: 'sliding-window-log', observed: true, blockMs: 900 },
  ],
];
const RULES = RULE_SETS.map(rulesOf);

const step = fc.record({
  // mostly bursts of close requests, sometimes a pause past the windows
  dt: fc.oneof({ arbitrary: fc.integer({ min: 0, max: 120 }), weight: 4 }, { arbitrary: fc.integer({ min: 0, max: 4_000 }), weight: 1 }),
  client: fc.integer({ min: 0, max: 2 }),
  cost: fc.oneof({ arbitrary: fc.constant(1), weight: 3 }, { arbitrary: fc.integer({ min: 1, max: 6 }), weight: 1 }),
  set: fc.integer({ min: 0, max: RULES.length - 1 }),
  // mostly checks; now and then what RateLimitService does, and the refund `count` makes of an
  // earlier admitted check (picked by `pick`), often in a later window than it was charged in
  pick: fc.nat(),
  op: fc.oneof(
    { arbitrary: fc.constant('check' as const), weight: 12 },
    { arbitrary: fc.constant('refund' as const), weight: 3 },
    { arbitrary: fc.constantFrom('peek' as const, 'reward' as const, 'penalize' as const), weight: 3 },
    { arbitrary: fc.constantFrom('reset' as const, 'block' as const), weight: 1 },
  ),
});
const trace = fc.record({ start: fc.integer({ min: 0, max: 10_000 }), steps: fc.array(step, { minLength: 5, maxLength: 40 }) });

/**
 * A denial may come from a block cache, which names only the blocking rule and remembers its
 * quota from when it was denied: that rule must be one the reference denies, and it may not
 * claim a longer wait than the reference (which would deny what the storage would allow).
 */
function expectSameVerdict(reference: RateLimitResult, other: RateLimitResult, where: string): void {
  expect({ where, allowed: other.allowed }).toEqual({ where, allowed: reference.allowed });
  if (other.allowed) {
    expectSameDecision(reference, other, where);
    return;
  }
  for (const blocking of other.decisions.filter((d) => !d.allowed)) {
    const same = reference.decisions.find((d) => d.rule.name === blocking.rule.name);
    expect({ where, allowed: same?.allowed }).toEqual({ where, allowed: false });
    if (same!.retryAfterMs === Infinity) expect(blocking.retryAfterMs).toBe(Infinity);
    else expect(blocking.retryAfterMs).toBeLessThanOrEqual(same!.retryAfterMs + 1);
  }
}

function expectSameDecision(reference: RateLimitResult, other: RateLimitResult, where: string): void {
  const view = (result: RateLimitResult) => ({
    allowed: result.allowed,
    rules: result.decisions.map((d) => ({ name: d.rule.name, allowed: d.allowed, remaining: d.remaining, attempts: d.attempts })),
  });
  expect({ where, ...view(other) }).toEqual({ where, ...view(reference) });
  reference.decisions.forEach((d, i) => {
    const o = other.decisions[i];
    for (const field of ['retryAfterMs', 'resetMs'] as const) {
      if (d[field] === Infinity) expect(o[field]).toBe(Infinity);
      else expect(Math.abs(o[field] - d[field])).toBeLessThanOrEqual(1);
    }
  });
}

let run = 0;

/**
 * Plays `numRuns` random traces against a fresh MemoryStorage and `remote` (built on the same
 * clock) and asserts they agree at every step. Returns counts, so callers can check coverage.
 */
export async function playDifferentialTraces(
  remote: (clock: FakeClock) => RateLimitStorage,
  numRuns: number,
  compare: 'every rule' | 'verdict' = 'every rule',
  /** Keep each trace on one client and one rule set, so denials repeat on the same keys. */
  focused = false,
): Promise<{ checks: number; denied: number; impossible: number; operations: number; refunds: number }> {
  const expectAgreement = compare === 'every rule' ? expectSameDecision : expectSameVerdict;
  const clock = new FakeClock();
  const storage = remote(clock);
  let checks = 0;
  let denied = 0;
  let impossible = 0;
  let others = 0;
  let refunds = 0;
  try {
    await fc.assert(
      fc.asyncProperty(trace, async ({ start, steps }) => {
        const id = ++run;
        clock.time = Date.UTC(2030, 0, 1) + id * 1_000_000 + start;
        const local = new MemoryStorage({ clock: clock.now });
        /** Admitted checks not yet refunded: each storage's own charge of them. */
        const charges: { who: string; set: number; cost: number; mine: number; theirs: number }[] = [];
        for (const [i, step] of steps.entries()) {
          const { dt, cost } = step;
          const { client, set } = focused ? steps[0] : step;
          clock.advance(dt);
          const who = `run${id}-c${client}`;
          const mine = operations(local, RULES[set], who);
          const theirs = operations(storage, RULES[set], who);
          if (step.op === 'refund') {
            // any admitted check of the trace, of whichever client and rule set
            if (charges.length === 0) continue;
            const charge = charges.splice(step.pick % charges.length, 1)[0];
            const [ours, remote] = [operations(local, RULES[charge.set], charge.who), operations(storage, RULES[charge.set], charge.who)];
            await ours.refund(charge.cost, charge.mine);
            await remote.refund(charge.cost, charge.theirs);
            expectSameDecision(await ours.peek(1), await remote.peek(1), `peek after a refund at step ${i} of run ${id}`);
            refunds++;
            continue;
          }
          if (step.op === 'reset' || step.op === 'block') {
            await mine[step.op](cost * 300);
            await theirs[step.op](cost * 300);
            others++;
            continue;
          }
          if (step.op !== 'check') {
            expectSameDecision(await mine[step.op](cost), await theirs[step.op](cost), `${step.op} at step ${i} of run ${id}`);
            others++;
            continue;
          }
          const expected = await mine.check(cost);
          const actual = await theirs.check(cost);
          expectAgreement(expected, actual, `step ${i} of run ${id}`);
          if (expected.allowed) charges.push({ who, set, cost, mine: expected.chargedAt!, theirs: actual.chargedAt! });
          checks++;
          if (!expected.allowed) denied++;
          if (expected.decisions.some((d) => d.retryAfterMs === Infinity)) impossible++;
        }
      }),
      { numRuns, ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED), path: process.env.FC_PATH } : {}) },
    );
  } finally {
    await storage.close?.();
  }
  return { checks, denied, impossible, operations: others, refunds };
}
