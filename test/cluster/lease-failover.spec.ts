import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import type { Cluster } from 'ioredis';
import { RedisStorage } from '../../lib/index.js';
import { closeCluster, startCluster, type ClusterNode, type TestCluster } from '../support/redis-cluster.js';
import { adminCommand, rawCommand } from '../support/redis-nodes.js';
import { until } from '../support/until.js';

/**
 * The concurrency leases of `@ConcurrencyLimit` across a real Redis Cluster failover, on
 * RedisStorage directly (acquire/release, as the interceptor calls them). The master of the
 * leases' slot dies before its replica got them: the replica is frozen (SIGSTOP) and its
 * replication link cut before the leases are taken, so nothing written from then on reaches it.
 * (Frozen alone, it still gets them: thawed, it reads what the master had already written to its
 * socket; tried: 5 writes made while it was frozen were all on it once promoted.) The replica is
 * then promoted with CLUSTER FAILOVER TAKEOVER. Without the restore, the promoted master knows no
 * lease and admits `limit` more requests while the first are in flight. With it, the instance
 * that holds them puts them back: when its client learns of the promotion, on its own when it
 * sends nothing else, and in its very next acquire if that gets there first.
 */

const LIMIT = 2;
const LEASE_MS = 60_000;


let cluster: TestCluster;
beforeAll(async () => {
  cluster = await startCluster();
}, 60_000);
afterAll(() => cluster?.stop());

describe('concurrency leases across a Cluster failover', () => {
  let client: Cluster | undefined;
  let storage: RedisStorage | undefined;
  /** A node this file froze or killed, to thaw or restart whatever happened in the test. */
  let frozen: ClusterNode | undefined;
  let killed: ClusterNode | undefined;
  const warnings: string[] = [];

  beforeEach(async () => {
    warnings.length = 0;
    jest.spyOn(Logger.prototype, 'warn').mockImplementation((message: unknown) => void warnings.push(String(message)));
    await cluster.flush();
    // the options README recommends for a Cluster client given to the module
    client = cluster.client({ enableAutoPipelining: true, redisOptions: { autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 1 } });
    storage = new RedisStorage({ client, blockCache: false });
    await storage.init();
  });
  afterEach(async () => {
    jest.restoreAllMocks();
    frozen?.process.kill('SIGCONT');
    frozen = undefined;
    await storage?.close();
    if (client) await closeCluster(client);
    client = storage = undefined;
    // the next test needs a replica behind every master again
    if (killed) await cluster.restart(killed);
    killed = undefined;
  }, 30_000);

  /**
   * The master serving `key` and its replica, frozen and cut off: what the master writes from
   * now on never reaches the replica.
   */
  async function isolateReplicaOf(key: string): Promise<{ master: ClusterNode; replica: ClusterNode }> {
    const master = await cluster.masterOf(key);
    const replica = cluster.nodes.find((node) => node.alive && node.role === 'replica' && node.masterId === master.id);
    if (!replica) throw new Error(`master ${master.port} has no replica`);
    await cluster.waitForReplicas();
    replica.process.kill('SIGSTOP');
    frozen = replica;
    expect(await adminCommand(master.port, ['CLIENT', 'KILL', 'TYPE', 'replica'])).toBe(1);
    return { master, replica };
  }

  /** Kills the master, thaws the replica and promotes it; resolves once the cluster agrees. */
  async function failOver(master: ClusterNode, replica: ClusterNode): Promise<void> {
    killed = await cluster.killMaster(master);
    replica.process.kill('SIGCONT');
    frozen = undefined;
    const reply = await rawCommand(replica.port, ['CLUSTER', 'FAILOVER', 'TAKEOVER']);
    // it may have started an election of its own already (its master is FAIL): then it is master, or soon
    if (reply instanceof Error && !/replica|slave/i.test(reply.message)) throw reply;
    const promoted = await cluster.waitForFailover();
    expect(promoted.map((node) => node.port)).toEqual([replica.port]);
  }

  const zcard = async (node: ClusterNode, key: string) => Number(await adminCommand(node.port, ['ZCARD', key]));

  it('the holder puts its 2 leases back on the promoted replica, which had none: a 3rd acquire is denied', async () => {
    const key = 'rl:{lease-failover-a}:exports:cc';
    const marker = '{lease-failover-a}:written-after-the-cut';
    const { master, replica } = await isolateReplicaOf(key);

    expect(await storage!.acquire(key, LIMIT, LEASE_MS, 'lease-1')).toMatchObject({ allowed: true, inFlight: 1 });
    expect(await storage!.acquire(key, LIMIT, LEASE_MS, 'lease-2')).toMatchObject({ allowed: true, inFlight: 2 });
    expect(await storage!.acquire(key, LIMIT, LEASE_MS, 'lease-x')).toMatchObject({ allowed: false, inFlight: 2 });
    await adminCommand(master.port, ['SET', marker, '1']);
    expect(await zcard(master, key)).toBe(2);
    expect(storage!.leasesHeld).toBe(2);

    await failOver(master, replica);
    // the promoted replica lost what the master wrote after the cut: the leases with the marker
    expect(await adminCommand(replica.port, ['EXISTS', marker])).toBe(0);

    // ioredis learns of the promotion when a command or a health check (PING of every master) asks
    await until(async () => storage!.ping().then(() => true, () => false), 'the storage to reach every master', 10_000);
    expect(client!.slots[Number(await adminCommand(replica.port, ['CLUSTER', 'KEYSLOT', key]))]?.[0]).toBe(`127.0.0.1:${replica.port}`);
    await until(async () => (await zcard(replica, key)) === 2, 'both leases back on the promoted replica', 10_000);
    expect(warnings).toContain(`Put back 2 concurrency lease(s) Redis had lost under key "${key}"`);

    expect(await storage!.acquire(key, LIMIT, LEASE_MS, 'lease-3')).toMatchObject({ allowed: false, inFlight: 2 });
    // releases reach the new master: one freed slot fits one more, not two
    await storage!.release(key, 'lease-1');
    expect(await storage!.acquire(key, LIMIT, LEASE_MS, 'lease-4')).toMatchObject({ allowed: true, inFlight: 2 });
    expect(await storage!.acquire(key, LIMIT, LEASE_MS, 'lease-5')).toMatchObject({ allowed: false, inFlight: 2 });
    await storage!.release(key, 'lease-2');
    await storage!.release(key, 'lease-4');
    expect(await zcard(replica, key)).toBe(0);
    expect(storage!.leasesHeld).toBe(0);
  }, 40_000);

  it('the first acquire after the failover is denied, whether it or the restore reaches the promoted replica first', async () => {
    const key = 'rl:{lease-failover-b}:exports:cc';
    const { master, replica } = await isolateReplicaOf(key);
    expect(await storage!.acquire(key, LIMIT, LEASE_MS, 'lease-1')).toMatchObject({ allowed: true });
    expect(await storage!.acquire(key, LIMIT, LEASE_MS, 'lease-2')).toMatchObject({ allowed: true });

    await failOver(master, replica);
    // At once: the client may not know of the promotion yet (its slot table names the dead
    // master), and the restore it started when it lost the master may be on its way. An acquire
    // that gets there first carries the newest lease this instance holds: missing, it makes the
    // acquire put back both before counting.
    let third: unknown;
    await until(async () => {
      third = await storage!.acquire(key, LIMIT, LEASE_MS, 'lease-3').catch(() => undefined); // CLUSTERDOWN while the cluster settles
      return third !== undefined;
    }, 'an acquire to be answered', 10_000);
    expect(third).toMatchObject({ allowed: false, inFlight: 2 });
    expect(await zcard(replica, key)).toBe(2);
    expect(warnings).toContain(`Put back 2 concurrency lease(s) Redis had lost under key "${key}"`);
  }, 40_000);

  it('an instance that sends nothing more puts its leases back on its own: another instance is denied a 3rd', async () => {
    const key = 'rl:{lease-failover-c}:exports:cc';
    const otherClient = cluster.client({ enableAutoPipelining: true, redisOptions: { autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 1 } });
    const other = new RedisStorage({ client: otherClient, blockCache: false });
    try {
      await other.init();
      const { master, replica } = await isolateReplicaOf(key);
      expect(await storage!.acquire(key, LIMIT, LEASE_MS, 'lease-1')).toMatchObject({ allowed: true });
      expect(await storage!.acquire(key, LIMIT, LEASE_MS, 'lease-2')).toMatchObject({ allowed: true });
      expect(await other.acquire(key, LIMIT, LEASE_MS, 'other-1')).toMatchObject({ allowed: false, inFlight: 2 });

      await failOver(master, replica);
      // nothing else from the holder: the restore it started on losing the master reaches the promoted replica
      await until(async () => (await zcard(replica, key)) === 2, 'the holder to put its leases back', 5_000);
      expect(await other.acquire(key, LIMIT, LEASE_MS, 'other-2')).toMatchObject({ allowed: false, inFlight: 2 });
    } finally {
      await other.close();
      await closeCluster(otherClient);
    }
  }, 40_000);
});
