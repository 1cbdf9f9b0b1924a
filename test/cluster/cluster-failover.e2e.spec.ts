import 'reflect-metadata';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import { RateLimit } from '../../lib/index.js';
import { startLoad, sleep } from '../support/load.js';
import { startCluster, type TestCluster } from '../support/redis-cluster.js';
import { rawCommand } from '../support/redis-nodes.js';
import { createScenarioApp } from '../support/scenario-app.js';
import { scriptCalls } from '../support/assertions.js';

@Controller()
class QuoteController {
  @Get('open')
  @RateLimit('100000/minute')
  open() {
    return { ok: true };
  }
}

const TIMEOUT = 50;
// While other masters keep answering, a check on the dead one may wait up to the 1 s hard cap
// (the storage shows signs of life); plus scheduling noise on two shared cores.
const LONGEST_WAIT = 1_000 + 250;

async function scriptCallsOn(port: number): Promise<number> {
  return scriptCalls(String(await rawCommand(port, ['INFO', 'commandstats'])));
}

describe('a Cluster master failing over under load', () => {
  let cluster: TestCluster;
  let app: INestApplication | undefined;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    cluster = await startCluster();
  }, 60_000);
  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    await app?.close();
    await cluster?.stop();
  });

  it('answers by the failure policy during the failover, then decides on the promoted replica', async () => {
    // the options README recommends for a Cluster client given to the module
    const client = cluster.client({
      enableAutoPipelining: true,
      redisOptions: { autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 1 },
    });
    app = await createScenarioApp(
      [QuoteController],
      { storage: { type: 'redis', client }, onStorageError: 'memory', storageTimeout: TIMEOUT },
      { forceCloseConnections: true },
    );
    await app.listen(0, '127.0.0.1');
    const base = (await app.getUrl()).replace('[::1]', '127.0.0.1');

    // every request of this client lives in the slot of its hash tag
    const master = await cluster.masterOf('{ip:127.0.0.1}');
    const replica = cluster.nodes.find((node) => node.masterId === master.id)!;
    const load = startLoad(base, ['/open'], 6);
    await sleep(300);
    expect(await scriptCallsOn(master.port)).toBeGreaterThan(0);

    await cluster.killMaster(master);
    const killedAt = performance.now();
    await cluster.waitForFailover();
    const promotedAt = performance.now();
    let backOnCluster = Infinity;
    while (performance.now() - promotedAt < 5_000) {
      if ((await scriptCallsOn(replica.port)) > 0) {
        backOnCluster = performance.now() - promotedAt;
        break;
      }
      await sleep(25);
    }
    const samples = await load.stop();

    expect(samples.filter((s) => s.sentAt > killedAt && s.sentAt < promotedAt).length).toBeGreaterThan(10);
    expect([...new Set(samples.map((s) => s.status))]).toEqual([200]);
    expect(Math.max(...samples.map((s) => s.ms))).toBeLessThanOrEqual(LONGEST_WAIT);
    expect(backOnCluster).toBeLessThan(2_000);
    expect(unhandled).toEqual([]);

    await cluster.restart(master);
  }, 60_000);
});
