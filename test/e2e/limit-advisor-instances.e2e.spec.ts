import 'reflect-metadata';
import { Controller, Get, type ExecutionContext, type INestApplication } from '@nestjs/common';
import type { AddressInfo } from 'node:net';
import { LimitAdvisor, RateLimit, RateLimitService, readSharedReport, RedisStorage, type AdvisorPolicyReport } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp } from '../support/scenario-app.js';

const LIMIT = 100;
const POLICY = 'QuotesController.quote';

@Controller()
class QuotesController {
  @Get('quote')
  @RateLimit(`${LIMIT}/minute`, { key: (context: ExecutionContext) => String(context.switchToHttp().getRequest().headers['x-api-key']) })
  quote() {
    return { price: 1 };
  }
}

/** A small seeded generator (mulberry32): the same load on every run. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Per window, each client's requests: many light clients, a few heavy ones around the limit,
 * one abuser; some clients skip a window.
 */
function generateLoad(next: () => number, windows: number): Map<string, number>[] {
  const load: Map<string, number>[] = [];
  for (let w = 0; w < windows; w++) {
    const counts = new Map<string, number>();
    for (let c = 0; c < 150; c++) if (next() < 0.8) counts.set(`light-${c}`, 1 + Math.floor(next() ** 2 * 20));
    for (let c = 0; c < 12; c++) counts.set(`heavy-${c}`, 60 + Math.floor(next() * 90));
    counts.set('abuser', 350 + Math.floor(next() * 100));
    load.push(counts);
  }
  return load;
}

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

/**
 * Issue 21's done-means: two instances on one Redis take a generated load, each request sent
 * to either at random; the shared report's share of clients a candidate limit would refuse must
 * match the exact figure from the generator's own log within 1 point, and the heavy hitters
 * must name every client above 1% of the traffic.
 */
describe('the limit advisor across two instances on Redis', () => {
  let apps: INestApplication[] = [];
  let storages: RedisStorage[] = [];
  let clock: FakeClock;
  let log: Map<string, number>[];

  beforeAll(async () => {
    await redis.flush();
    clock = new FakeClock(Date.UTC(2030, 0, 1, 10, 0, 0));
    storages = [0, 1].map(() => new RedisStorage({ url: redis.url, clock: clock.now }));
    apps = await Promise.all(storages.map((storage) => createScenarioApp([QuotesController], { storage, advisor: { clock: clock.now } })));
    const bases = await Promise.all(
      apps.map(async (app) => {
        await app.listen(0, '127.0.0.1');
        return `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}/quote`;
      }),
    );
    const next = random(21);
    log = generateLoad(next, 3);
    for (const counts of log) {
      const requests: string[] = [];
      for (const [client, count] of counts) for (let i = 0; i < count; i++) requests.push(client);
      // shuffled, so the instances see every client's requests interleaved
      for (let i = requests.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [requests[i], requests[j]] = [requests[j], requests[i]];
      }
      const statuses = new Map<number, number>();
      for (let i = 0; i < requests.length; i += 16) {
        const done = await Promise.all(
          requests.slice(i, i + 16).map((client) =>
            fetch(bases[next() < 0.5 ? 0 : 1], { headers: { 'x-api-key': client } }).then(async (response) => (await response.arrayBuffer(), response.status)),
          ),
        );
        for (const status of done) statuses.set(status, (statuses.get(status) ?? 0) + 1);
      }
      expect([...statuses.keys()].sort()).toEqual([200, 429]);
      clock.advance(60_000);
    }
    // the other instance adds what it saw every flushInterval; a report flushes its own instance
    await apps[1].get(LimitAdvisor).flush();
  }, 120_000);

  afterAll(async () => {
    for (const app of apps) await app.close();
    for (const storage of storages) await storage.close();
  });

  const CANDIDATES = [20, 50, 80, 90, 100, 120, 150, 200, 300, 400];
  const clientWindows = () => log.flatMap((counts) => [...counts.values()]);
  const report = async (instance: number): Promise<AdvisorPolicyReport> => {
    const { policies, scope } = await apps[instance].get(RateLimitService).advisorReport({ candidates: CANDIDATES, top: 50 });
    expect(scope).toBe('shared');
    return policies.find((policy) => policy.name === POLICY)!;
  };

  it('counts every client-window and request of both instances', async () => {
    const policy = await report(0);
    const counts = clientWindows();
    expect(policy.clients).toBe(counts.length);
    expect(policy.requests).toBe(counts.reduce((sum, count) => sum + count, 0));
    // what the limit really refused: every request past the 100th of its client's window
    expect(policy.denied).toBe(counts.reduce((sum, count) => sum + Math.max(0, count - LIMIT), 0));
  });

  it("matches the generator's share of clients (and requests) each candidate refuses, within 1 point", async () => {
    const policy = await report(1);
    const counts = clientWindows();
    const requests = counts.reduce((sum, count) => sum + count, 0);
    for (const limit of CANDIDATES) {
      const truth = counts.filter((count) => count > limit).length / counts.length;
      const truthRequests = counts.reduce((sum, count) => sum + Math.max(0, count - limit), 0) / requests;
      const candidate = policy.candidates.find((entry) => entry.limit === limit)!;
      expect({ limit, share: Math.abs(candidate.clientsDenied - truth) <= 0.01 }).toEqual({ limit, share: true });
      expect({ limit, share: Math.abs(candidate.requestsDenied - truthRequests) <= 0.01 }).toEqual({ limit, share: true });
      // and the truth lies within the stated bounds
      expect(candidate.clientsDeniedRange.low).toBeLessThanOrEqual(truth + 1e-12);
      expect(candidate.clientsDeniedRange.high).toBeGreaterThanOrEqual(truth - 1e-12);
      if (candidate.exact) expect(candidate.clientsDenied).toBeCloseTo(truth, 12);
    }
    // the current limit is always exact
    expect(policy.candidates.find((entry) => entry.limit === LIMIT)!.exact).toBe(true);
  });

  it('names every client above 1% of the traffic among the heavy hitters, never below its true count', async () => {
    const policy = await report(0);
    const totals = new Map<string, number>();
    for (const counts of log) for (const [client, count] of counts) totals.set(client, (totals.get(client) ?? 0) + count);
    const all = [...totals.values()].reduce((sum, count) => sum + count, 0);
    const heavy = [...totals].filter(([, count]) => count > all / 100);
    expect(heavy.length).toBeGreaterThanOrEqual(13);
    const top = new Map(policy.top.map((entry) => [entry.identity, entry]));
    for (const [client, count] of heavy) {
      const entry = top.get(client);
      expect({ client, found: entry !== undefined }).toEqual({ client, found: true });
      expect(entry!.requests).toBeGreaterThanOrEqual(count);
      expect(entry!.requests - entry!.error).toBeLessThanOrEqual(count);
    }
    expect(policy.top[0].identity).toBe('abuser');
  });

  it('reads the same report from Redis alone, as the CLI does', async () => {
    const fromApp = await report(0);
    const { policies } = await readSharedReport(redis.url, { candidates: CANDIDATES, top: 50 }, clock.now());
    const fromRedis = policies.find((policy) => policy.name === POLICY)!;
    expect(fromRedis).toEqual(fromApp);
  });
});
