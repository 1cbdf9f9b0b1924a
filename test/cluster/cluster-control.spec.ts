import { RedisStorage } from '../../lib/index.js';
import { operations, rulesOf } from '../conformance/limiter.js';
import { FakeClock } from '../support/fake-clock.js';
import { startCluster, type TestCluster } from '../support/redis-cluster.js';

/**
 * Reset and block across instances on Redis Cluster: the scripts publish from whichever master
 * holds the client's slot, and each instance's subscriber listens on one node of its choice.
 */
let cluster: TestCluster;
beforeAll(async () => {
  cluster = await startCluster();
}, 60_000);
afterAll(() => cluster?.stop());

describe('RateLimitService operations across instances on Redis Cluster', () => {
  const storages: RedisStorage[] = [];
  afterEach(async () => {
    for (const storage of storages.splice(0)) await storage.close();
  });

  async function twoInstances(clock: FakeClock): Promise<RedisStorage[]> {
    await cluster.flush();
    const channel = `test:block-cache:${Math.random()}`;
    for (let i = 0; i < 2; i++) storages.push(new RedisStorage({ client: cluster.client(), clock: clock.now, blockCache: { channel } }));
    await Promise.all(storages.map((storage) => storage.init()));
    // both subscribed: a publish reaches 2 receivers (PUBSUB NUMSUB counts only the node asked)
    const probe = cluster.client();
    for (const deadline = Date.now() + 5_000; ; ) {
      if ((await probe.publish(channel, 'probe')) >= 2 || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return storages;
  }

  it("a reset on one instance clears the other's cached denial within 100 ms", async () => {
    const clock = new FakeClock();
    const [a, b] = await twoInstances(clock);
    const rules = rulesOf([{ rate: '3/minute', algorithm: 'fixed-window', blockMs: 900_000 }]);
    const onA = operations(a, rules, 'pat');
    const onB = operations(b, rules, 'pat');
    for (let i = 0; i < 3; i++) expect((await onB.check()).allowed).toBe(true);
    expect((await onB.check()).decisions[0].retryAfterMs).toBe(900_000);
    expect(b.cachedDenial(rules.map((rule) => ({ key: `t:{pat}:${rule.keySuffix}`, rule })), 1)).toBeDefined();

    await onA.reset();
    const resetAt = performance.now();
    while (!(await onB.check()).allowed) {
      expect(performance.now() - resetAt).toBeLessThan(100);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  });

  it('every operation works on the slot of the client, and a block holds on both instances', async () => {
    const clock = new FakeClock();
    const [a, b] = await twoInstances(clock);
    const rules = rulesOf([{ rate: '10/minute', algorithm: 'sliding-window-log' }]);
    const onA = operations(a, rules, 'quinn');
    const onB = operations(b, rules, 'quinn');
    await onA.check(4);
    expect((await onB.peek()).decisions[0].remaining).toBe(6);
    expect((await onB.reward(2)).decisions[0].remaining).toBe(8);
    expect((await onA.penalize(8)).allowed).toBe(false);
    await onA.block(30_000);
    expect((await onB.check()).decisions[0].retryAfterMs).toBe(30_000);
    await onB.reset();
    expect((await onA.check()).decisions[0].remaining).toBe(9);
  });
});
