import { RedisStorage } from '../../lib/index.js';
import { startPrivateRedis, startRedis, type TestRedis } from '../support/redis-server.js';
import { playDifferentialTraces } from './differential.js';
import { scriptCalls } from '../support/assertions.js';

// Thousands of traces are CPU-bound: ~15 s alone, but near Jest's 30 s default on a loaded 2-core
// machine, and a test that times out keeps writing to Redis after its file has stopped.
const TRACES_TIMEOUT = 120_000;

describe('memory and Redis agree on random traces', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  it('for every algorithm, alone and combined, decision for decision', async () => {
    const runs = 2_000;
    const { checks, denied, impossible, refunds } = await playDifferentialTraces(
      (clock) => new RedisStorage({ url: redis.url, clock: clock.now, blockCache: false }),
      runs,
    );
    expect(checks).toBeGreaterThan(runs * 7); // of about 20 steps a trace, a sixth are other operations
    expect(refunds).toBeGreaterThan(runs / 2);
    // the traces reach the interesting paths, not only admissions
    expect(denied).toBeGreaterThan(checks / 10);
    expect(impossible).toBeGreaterThan(0);
  }, TRACES_TIMEOUT);
});

// This one counts script calls in INFO commandstats, which is server-wide: a server of its own.
describe('memory and Redis agree on random traces, with the block cache', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startPrivateRedis();
  });
  afterAll(() => redis?.stop());

  it('with the block cache on: never denies what Redis would allow, nor allows what it would deny', async () => {
    const admin = redis.client();
    await admin.config('RESETSTAT');
    const { checks, denied, operations, refunds } = await playDifferentialTraces(
      (clock) => new RedisStorage({ url: redis.url, clock: clock.now }),
      1_000,
      'verdict',
      true,
    );
    expect(checks).toBeGreaterThan(7_000);
    expect(denied).toBeGreaterThan(checks / 10);
    // and it did answer denials locally: fewer script calls than checks
    const stats = await admin.info('commandstats');
    const calls = scriptCalls(stats);
    expect(calls).toBeGreaterThan(0);
    // each peek, reward, penalize, reset and block is a script call of its own, a refund two (with
    // the peek after it); the checks that made none were denied from the cache. Resets and refunds
    // forget the keys they touch, so the cache answers a share of the denials, not all of them.
    const hits = checks - (calls - operations - 2 * refunds);
    expect(hits).toBeGreaterThan(denied / 6);
  }, TRACES_TIMEOUT);
});
