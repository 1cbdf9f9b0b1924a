import { RedisStorage } from '../../lib/index.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { playDifferentialTraces } from './differential.js';

describe('memory and Redis agree on random traces', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  it('for every algorithm, alone and combined, decision for decision', async () => {
    const runs = 2_000;
    const { checks, denied, impossible } = await playDifferentialTraces(
      (clock) => new RedisStorage({ url: redis.url, clock: clock.now }),
      runs,
    );
    expect(checks).toBeGreaterThan(runs * 10);
    // the traces reach the interesting paths, not only admissions
    expect(denied).toBeGreaterThan(checks / 10);
    expect(impossible).toBeGreaterThan(0);
  });
});
