import 'reflect-metadata';
import { Controller, Get, Param, type ExecutionContext } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { ConcurrencyLimit, HeaderKeyResolver, RateLimit, RateLimitService, StorageUnavailableError } from '../../lib/index.js';
import { startPrivateRedis, type ControllableRedis } from '../support/redis-server.js';
import { clearOfBoundary, deploy, report, send, sleep, until, type Answer, type Deployment, type Row } from './support.js';

/**
 * Attacks 5 and 6 of issue 19, with real timing: Redis stalls and restarts. Redis only: a
 * memory storage has no server to pause, freeze or restart.
 *
 * 5. Ghost charges: with `onStorageError: 'deny'`, requests answered 503 while Redis is paused
 *    (CLIENT PAUSE 1500 ALL) ran when it woke up: the client then found 5 of its 10 gone. And a
 *    `penalize` that rejected while Redis was frozen (SIGSTOP) applied after the thaw: retried
 *    once, it counted twice (6 left of 10, not 8).
 * 6. A restart: Redis comes back empty, without the `@ConcurrencyLimit(2)` leases of the
 *    requests still in flight: 2 more got in, 4 at once.
 */

// ---- the attacked apps: public API only ----

@Controller()
class QuoteController {
  @Get('quote')
  @RateLimit('10/minute', { key: new HeaderKeyResolver('x-client'), bucket: 'ghost' })
  quote() {
    return { ok: true };
  }
}

const work = { running: 0, mostRunning: 0, started: 0 };
const byClient = (context: ExecutionContext) => `client:${String(context.switchToHttp().getRequest().headers['x-client'])}`;

@Controller()
class ExportController {
  @Get('export/:id')
  @ConcurrencyLimit(2, { key: byClient })
  async export(@Param('id') id: string) {
    work.started++;
    work.running++;
    work.mostRunning = Math.max(work.mostRunning, work.running);
    try {
      await sleep(3_000); // a long export, still working while Redis restarts
      return { id };
    } finally {
      work.running--;
    }
  }
}

// ---- the harness ----

const rows: Row[] = [];
let redis: ControllableRedis;
let admin: Redis;
beforeAll(async () => {
  redis = await startPrivateRedis();
  admin = redis.client();
});
afterAll(async () => {
  redis?.thaw();
  await redis?.stop();
  const notApplicable = (attack: string): Row => ({
    attack,
    storage: 'memory',
    trials: '-',
    measured: 'n/a: a memory storage has no server to pause, freeze or restart',
    observed: 'n/a',
    bound: 'n/a',
    held: true,
  });
  rows.unshift(notApplicable('5. ghost charges after a Redis stall'), notApplicable('6. Redis restart with leases in flight'));
  report(import.meta.url, rows);
});

describe('Redis stalls (two instances A and B on one Redis, express)', () => {
  let deployment: Deployment | undefined;
  afterEach(async () => {
    redis.thaw();
    await deployment?.close();
    deployment = undefined;
  });

  it('5a. requests answered 503 during CLIENT PAUSE 1500 are never charged: the 10 after it are all admitted', async () => {
    await admin.flushdb();
    // the module's default storageTimeout (50 ms) and circuit breaker; fail closed
    deployment = await deploy([QuoteController], 'redis', redis, { module: { onStorageError: 'deny' } });
    const TRIALS = 5;
    const admittedAfter: number[] = [];
    const during: Answer[] = [];
    const eleventh: Answer[] = [];
    for (let n = 0; n < TRIALS; n++) {
      await clearOfBoundary(60_000, 3_000);
      const client = `ghost-${n}`;
      const quote = (i: number) => send(deployment!.pick(i).port, '/quote', { headers: { 'x-client': client } }).answer;
      await admin.client('PAUSE', 1_500, 'ALL');
      const pausedAt = performance.now();
      for (let i = 0; i < 5; i++) during.push(await quote(i));
      expect(performance.now() - pausedAt).toBeLessThan(1_500); // all answered while Redis slept
      await admin.ping(); // answered once the pause is over: what queued meanwhile has run
      let admitted = 0;
      for (let i = 0; i < 10; i++) if ((await quote(i)).status === 200) admitted++;
      admittedAfter.push(admitted);
      eleventh.push(await quote(10)); // the limit is live: the 11th is refused
    }
    const refused = during.filter((a) => a.status === 503).length;
    rows.push({
      attack: "5a. ghost charges: 5 requests answered 503 during CLIENT PAUSE 1500 (onStorageError: 'deny', 10/minute)",
      storage: deployment.label,
      trials: `${TRIALS} trials`,
      measured: 'of the 10 requests after the pause, how many admitted',
      observed: `${admittedAfter.join(', ')} (during the pause: ${refused} of ${during.length} answered 503; 11th: ${eleventh.map((a) => a.status).join(', ')})`,
      bound: '10 of 10 [was 5]',
      held: admittedAfter.every((n) => n === 10),
    });
    expect(refused).toBe(during.length);
    expect(admittedAfter).toEqual(Array(TRIALS).fill(10));
    expect(eleventh.map((a) => a.status)).toEqual(Array(TRIALS).fill(429));
  }, 60_000);

  it('5b. a penalize rejected while Redis is frozen never applies: retried once after the thaw, it counts once', async () => {
    await admin.flushdb();
    deployment = await deploy([QuoteController], 'redis', redis, { module: { onStorageError: 'deny' } });
    const [a, b] = deployment.instances.map((instance) => instance.get(RateLimitService));
    const TRIALS = 20;
    const left: number[] = [];
    for (let n = 0; n < TRIALS; n++) {
      await clearOfBoundary(60_000, 1_000);
      const identity = `x-client:penalized-${n}`;
      redis.freeze();
      try {
        await expect(a.penalize(identity, 'ghost', 2)).rejects.toBeInstanceOf(StorageUnavailableError);
      } finally {
        redis.thaw();
      }
      await a.penalize(identity, 'ghost', 2); // the retry, once; sent after the rejected one, so Redis runs it after
      left.push((await b.peek(identity, 'ghost')).remaining);
    }
    rows.push({
      attack: '5b. ghost charges: penalize(2) rejected during SIGSTOP, retried once after thaw',
      storage: deployment.label,
      trials: `${TRIALS} trials`,
      measured: "remaining of 10 (peek on B) after the retry",
      observed: summarize(left),
      bound: '8 [was 6]',
      held: left.every((n) => n === 8),
    });
    expect(left).toEqual(Array(TRIALS).fill(8));
  }, 60_000);

  it('6. a Redis restart with 2 requests in flight: at most 2 run at once, before and after (@ConcurrencyLimit(2))', async () => {
    await admin.flushdb();
    Object.assign(work, { running: 0, mostRunning: 0, started: 0 });
    deployment = await deploy([ExportController], 'redis', redis);
    const ROUNDS = 3;
    const after: (Answer | 'still running')[] = [];
    const pending: Promise<Answer>[] = [];
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const get = (i: number) => send(deployment!.pick(i).port, `/export/r${round}-${i}`, { headers: { 'x-client': 'eve' } }).answer;
        // 2 in flight, one on A and one on B
        pending.push(get(0), get(1));
        await until(() => work.running === 2, 'both exports are running', 5_000);
        await redis.kill();
        await redis.restart(); // empty: the leases are gone from Redis
        const probe = redis.client();
        await until(() => probe.ping().then((pong) => pong === 'PONG', () => false), 'Redis answers again', 5_000);
        probe.disconnect();
        await sleep(1_000); // the instances have reconnected
        // 2 more, one on A and one on B, while the first 2 still work (3 s each)
        const more = [get(2), get(3)];
        pending.push(...more);
        for (const answer of more) after.push(await Promise.race([answer, sleep(1_000).then(() => 'still running' as const)]));
        await Promise.all(pending);
        await until(() => work.running === 0, 'every export has ended', 10_000);
        await sleep(100); // the releases land
      }
    } finally {
      await Promise.all(pending);
      rows.push({
        attack: '6. Redis restart (kill, restart empty) with 2 of @ConcurrencyLimit(2) in flight, then 2 more',
        storage: deployment.label,
        trials: `${ROUNDS} rounds`,
        measured: 'most handlers running at once (3 s each)',
        observed: `${work.mostRunning} (the 2 sent after each restart: ${after.map((a) => (typeof a === 'string' ? a : a.status)).join(', ')})`,
        bound: '≤ 2 [was 4]',
        held: work.mostRunning <= 2,
      });
    }
    expect(work.mostRunning).toBeLessThanOrEqual(2);
    expect(work.started).toBe(2 * ROUNDS);
  }, 60_000);
});

/** `8 ×20`, or each distinct figure with how often it came. */
function summarize(values: readonly number[]): string {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].map(([v, n]) => `${v} ×${n}`).join(', ');
}
