import { RedisStorage } from '../../lib/index.js';
import { brief, checker, rulesOf } from '../conformance/limiter.js';
import { until } from '../support/until.js';
import { FakeClock } from '../support/fake-clock.js';
import { startSentinel, type TestSentinel } from '../support/redis-sentinel.js';

let sentinel: TestSentinel;
beforeAll(async () => {
  sentinel = await startSentinel();
}, 60_000);
afterAll(() => sentinel?.stop());

describe('RedisStorage over Redis Sentinel', () => {
  it('keeps a budget across a failover: what was used stays used on the new master', async () => {
    const clock = new FakeClock();
    const client = sentinel.client();
    const storage = new RedisStorage({ client, clock: clock.now, blockCache: false });
    const rules = rulesOf([
      { rate: '5/minute', algorithm: 'fixed-window' },
      { rate: '5/minute', algorithm: 'gcra' },
    ]);
    const check = checker(storage, rules, 'sentinel');
    const remaining = async () => (await check()).decisions.map((d) => [d.allowed, d.remaining]);
    for (const left of [4, 3, 2]) expect(await remaining()).toEqual([[true, left], [true, left]]);

    // WAIT on the connection that wrote: the replica has those writes before it is promoted
    expect(await client.call('WAIT', 1, 1_000)).toBe(1);
    const { from, to } = await sentinel.failover();
    expect(await sentinel.masterPort()).toBe(to);
    expect(to).not.toBe(from);

    clock.advance(1_000); // the same minute; GCRA regains a fraction of a request only
    expect(await remaining()).toEqual([[true, 1], [true, 1]]);
    expect(await remaining()).toEqual([[true, 0], [true, 0]]);
    expect(brief(await check())).toEqual([false, 0]);
  }, 60_000);
});

// A fresh master, replica and sentinel: the first failover above leaves its topology changing.
describe('RedisStorage creating its own Sentinel client', () => {
  let own: TestSentinel;
  beforeAll(async () => {
    own = await startSentinel();
  }, 60_000);
  afterAll(() => own?.stop());

  it('works with a client the storage creates from sentinel options, and closes it cleanly', async () => {
    const clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 10));
    const storage = new RedisStorage({
      options: { sentinels: [own.sentinel], name: own.masterName, failoverDetector: true },
      clock: clock.now,
      blockCache: false,
    });
    try {
      await storage.init();
      const check = checker(storage, rulesOf([{ rate: '5/minute', algorithm: 'sliding-window-log' }]), 'own-client');
      for (const left of [4, 3, 2]) expect(brief(await check())).toEqual([true, left]);
      expect(await storage.client.call('WAIT', 1, 1_000)).toBe(1);
      const { to } = await own.failover();
      // The storage's own client follows the sentinel (failoverDetector). Until it has switched, a
      // check may land on the old master, not yet demoted, and be lost with it: asynchronous
      // replication. Checks go once it answers from the new master.
      await until(
        async () => (await storage.client.info('server').catch(() => '')).includes(`tcp_port:${to}\r`),
        "the storage's client to reach the new master",
        15_000,
      );

      // until it has settled, checks may still fail
      let answer: Awaited<ReturnType<typeof check>> | undefined;
      const deadline = Date.now() + 10_000;
      while (!answer && Date.now() < deadline) {
        answer = await check().catch(() => undefined);
        if (!answer) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(answer && brief(answer)).toEqual([true, 1]);
      // the failover detector may switch once more on a busy machine: a check it refuses unsent
      // (no offline queue) charged nothing, and is sent again
      const sent = async () => {
        for (let tries = 0; ; tries++) {
          try {
            return await check();
          } catch (error) {
            if (tries > 100 || !/Stream isn't writeable/.test(String((error as Error).message))) throw error;
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        }
      };
      expect(brief(await sent())).toEqual([true, 0]);
      expect(brief(await sent())).toEqual([false, 0]);
    } finally {
      await storage.close();
    }
    expect(storage.client.status).toBe('end');
  }, 60_000);
});
