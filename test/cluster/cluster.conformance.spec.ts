import { RedisStorage } from '../../lib/index.js';
import { storageKeyBase } from '../../lib/keys/storage-key.js';
import { describeConformance } from '../conformance/conformance-suite.js';
import { playDifferentialTraces } from '../conformance/differential.js';
import { brief, checker, keyOf, rulesOf } from '../conformance/limiter.js';
import { FakeClock } from '../support/fake-clock.js';
import { startCluster, type TestCluster } from '../support/redis-cluster.js';
import { adminCommand, infoFields } from '../support/redis-nodes.js';
import { clusterTarget } from '../support/storage-targets.js';

let cluster: TestCluster;
beforeAll(async () => {
  cluster = await startCluster();
}, 60_000);
afterAll(() => cluster?.stop());

describe('conformance on Redis Cluster', () => {
  describeConformance(() => clusterTarget(() => cluster), () => cluster.flush());
});

describe('memory and Redis Cluster agree on random traces', () => {
  it('for every algorithm, alone and combined, decision for decision', async () => {
    // Enough runs that the share of denials (about 11 % of checks) stays clear of the tenth below.
    const runs = 900;
    const { checks, denied } = await playDifferentialTraces(
      (clock) => new RedisStorage({ client: cluster.client(), clock: clock.now, blockCache: false }),
      runs,
    );
    expect(checks).toBeGreaterThan(runs * 7); // of about 20 steps a trace, a sixth are other operations
    expect(denied).toBeGreaterThan(checks / 10);
  }, 120_000); // a fixed amount of work (about 20 s here): a busy machine takes longer, the verdict is the same
});

describe('Redis Cluster routing', () => {
  const T0 = Date.UTC(2030, 0, 1);
  const rules = rulesOf([
    { rate: '5/minute', algorithm: 'fixed-window' },
    { rate: '10/minute', algorithm: 'token-bucket' },
    { rate: '20/hour', algorithm: 'sliding-window-log' },
  ]);

  /** Sums `cmdstat_<name>` calls in INFO commandstats. */
  async function calls(port: number, names: readonly string[]): Promise<number> {
    const stats = infoFields(await adminCommand(port, ['INFO', 'commandstats']));
    return names.reduce((sum, name) => sum + Number(/calls=(\d+)/.exec(stats[`cmdstat_${name}`] ?? '')?.[1] ?? 0), 0);
  }

  it('never runs the limiter script on a replica, even with a client that reads from replicas', async () => {
    const client = cluster.client({ scaleReads: 'all' });
    const storage = new RedisStorage({ client, clock: () => T0, blockCache: false });
    await Promise.all(cluster.nodes.map((node) => adminCommand(node.port, ['CONFIG', 'RESETSTAT'])));

    for (let i = 0; i < 300; i++) await checker(storage, rules, `reader-${i % 60}`)();
    // plain reads through the same client do reach replicas, so the routing above is a choice
    for (let i = 0; i < 60; i++) await client.get(`plain-${i}`);

    const scripts = ['eval', 'evalsha', 'eval_ro', 'evalsha_ro'];
    for (const master of cluster.masters()) expect(await calls(master.port, scripts)).toBeGreaterThan(0);
    for (const replica of cluster.replicas()) {
      expect({ replica: replica.port, scripts: await calls(replica.port, scripts) }).toEqual({ replica: replica.port, scripts: 0 });
    }
    const replicaGets = await Promise.all(cluster.replicas().map((replica) => calls(replica.port, ['get'])));
    expect(replicaGets.reduce((a, b) => a + b)).toBeGreaterThan(0);
  });

  it('keeps every key of a multi-rule check in one slot, for any client identity (no CROSSSLOT)', async () => {
    const storage = new RedisStorage({ client: cluster.client(), clock: () => T0, blockCache: false });
    // plain, hashed (braces, spaces, non-ASCII, too long) and IPv6 identities, spread over all masters
    const identities = Array.from({ length: 150 }, (_, i) =>
      [`ip:203.0.113.${i}`, `user:{${i}}`, `user:${'x'.repeat(100)}${i}`, `ip:2001:db8::${i.toString(16)}`, `名前 ${i}`][i % 5],
    );
    const slots = new Set<number>();
    for (const identity of identities) {
      const base = storageKeyBase('rl', identity);
      const checks = rules.map((rule) => ({ key: base + rule.keySuffix, rule }));
      const result = await storage.check(checks, 1);
      expect(result.decisions.map((d) => [d.allowed, d.remaining])).toEqual([[true, 4], [true, 9], [true, 19]]);
      slots.add(Number(await adminCommand(cluster.masters()[0].port, ['CLUSTER', 'KEYSLOT', checks[0].key])));
    }
    expect(slots.size).toBeGreaterThan(100); // different clients really land on different slots
  });

  it('batches the checks of one turn by hash tag, so a batch never spans slots', async () => {
    const storage = new RedisStorage({ client: cluster.client(), clock: () => T0 + 1, blockCache: false });
    const identities = Array.from({ length: 60 }, (_, i) => `batch-${i}`);
    // every identity twice in one turn: one batch per identity, over every master
    const results = await Promise.all(
      [...identities, ...identities].map((identity) => {
        const base = storageKeyBase('rl', identity);
        return storage.check(rules.map((rule) => ({ key: base + rule.keySuffix, rule })), 1);
      }),
    );
    const firsts = results.slice(0, 60).map((r) => r.decisions.map((d) => d.remaining));
    const seconds = results.slice(60).map((r) => r.decisions.map((d) => d.remaining));
    expect(new Set(firsts.map(String))).toEqual(new Set(['4,9,19']));
    expect(new Set(seconds.map(String))).toEqual(new Set(['3,8,18']));
  });
});

// Last: it changes which nodes are masters (and restores a full set of replicas at the end).
describe('Redis Cluster failover', () => {
  it('keeps counting on the promoted replica after its master is killed', async () => {
    const clock = new FakeClock();
    const storage = new RedisStorage({ client: cluster.client(), clock: clock.now, blockCache: false });
    const [rule] = rulesOf([{ rate: '5/minute', algorithm: 'fixed-window' }]);
    const check = checker(storage, [rule], 'failover');
    for (const left of [4, 3, 2]) expect(brief(await check())).toEqual([true, left]);

    const master = await cluster.masterOf(keyOf('failover', rule));
    const replica = cluster.nodes.find((node) => node.masterId === master.id)!;
    await cluster.waitForReplicas(); // the replica has the writes before its master dies
    await cluster.killMaster(master);
    const promoted = await cluster.waitForFailover();
    expect(promoted.map((node) => node.port)).toEqual([replica.port]);
    expect((await cluster.masterOf(keyOf('failover', rule))).port).toBe(replica.port);

    expect(brief(await check())).toEqual([true, 1]);
    expect(brief(await check())).toEqual([true, 0]);
    expect(brief(await check())).toEqual([false, 0]);

    await cluster.restart(master);
    expect(master.role).toBe('replica');
    expect(master.masterId).toBe(replica.id);
  }, 60_000);
});
