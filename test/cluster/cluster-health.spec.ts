import 'reflect-metadata';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import { RateLimit, RateLimitHealthIndicator, type RateLimitHealthResult } from '../../lib/index.js';
import { sleep } from '../support/load.js';
import { startCluster, type TestCluster } from '../support/redis-cluster.js';
import { rawCommand } from '../support/redis-nodes.js';
import { createScenarioApp } from '../support/scenario-app.js';

@Controller()
class QuoteController {
  @Get('quote')
  @RateLimit('100000/minute')
  quote() {
    return { ok: true };
  }
}

async function pingsOn(port: number): Promise<number> {
  const stats = String(await rawCommand(port, ['INFO', 'commandstats']));
  return Number(/cmdstat_ping:calls=(\d+)/.exec(stats)?.[1] ?? 0);
}

/** Calls `probe` every 25 ms until `done` says so (or 10 s pass); how long it took, and the last answer. */
async function timeUntil<T>(probe: () => Promise<T>, done: (value: T) => boolean): Promise<{ ms: number; last: T }> {
  const start = performance.now();
  let last = await probe();
  while (!done(last) && performance.now() - start < 10_000) {
    await sleep(25);
    last = await probe();
  }
  return { ms: done(last) ? performance.now() - start : Infinity, last };
}

const statusOf = (result: RateLimitHealthResult) => result.ratelimit.status;

describe('RateLimitHealthIndicator on a Redis Cluster', () => {
  let cluster: TestCluster;
  let app: INestApplication | undefined;

  beforeAll(async () => {
    cluster = await startCluster();
  }, 60_000);
  afterAll(async () => {
    await app?.close();
    await cluster?.stop();
  });

  it('pings every master, is down while a master is dead, and up once its replica took over', async () => {
    const client = cluster.client({ redisOptions: { autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 1 } });
    app = await createScenarioApp([QuoteController], { storage: { type: 'redis', client } });
    const indicator = app.get(RateLimitHealthIndicator);

    const masters = cluster.masters();
    expect(masters).toHaveLength(3);
    const before = await Promise.all(masters.map((master) => pingsOn(master.port)));
    expect(await indicator.isHealthy()).toEqual({
      ratelimit: { status: 'up', storage: 'cluster', latencyMs: expect.any(Number), circuit: 'closed', invalidations: 'subscribed' },
    });
    const after = await Promise.all(masters.map((master) => pingsOn(master.port)));
    expect(after.map((count, i) => count - before[i])).toEqual([1, 1, 1]);

    // The dead master's slots are unserved until a replica is promoted: the masters left answering is not enough.
    await cluster.killMaster();
    const down = await timeUntil(() => indicator.isHealthy(), (result) => statusOf(result) === 'down');
    expect(down.ms).toBeLessThan(2_000);
    expect(down.last.ratelimit).toMatchObject({ status: 'down', storage: 'cluster', reason: expect.stringMatching(/^(error|timeout)$/) });
    // and it stays down, without traffic, until the failover
    await sleep(300);
    const stillDown = await indicator.isHealthy();
    const failedOver = cluster.waitForFailover();
    expect(statusOf(stillDown)).toBe('down');

    await failedOver;
    const up = await timeUntil(() => indicator.isHealthy(), (result) => statusOf(result) === 'up');
    expect(up.ms).toBeLessThan(2_000);
    expect(up.last.ratelimit).toMatchObject({ status: 'up', storage: 'cluster', circuit: 'closed' });
  }, 60_000);
});
