import 'reflect-metadata';
import { Controller, Get, type ExecutionContext, type INestApplication } from '@nestjs/common';
import request from 'supertest';
import { RateLimit, RateLimitService, RedisStorage, SkipRateLimit, type AdvisorPolicyReport, type RateLimitStorage } from '../../lib/index.js';
import { redactIdentity } from '../../lib/advisor/heavy-hitters.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';

const byClient = (context: ExecutionContext) => String(context.switchToHttp().getRequest().headers['x-client']);

@Controller()
class QuotesController {
  @Get('quotes')
  @RateLimit('10/minute', { key: byClient })
  quotes() {
    return { ok: true };
  }

  @Get('search')
  @RateLimit('10/minute', { key: byClient, mode: 'shadow' })
  search() {
    return { ok: true };
  }

  @Get('private')
  @RateLimit('10/minute', { key: byClient, advise: false })
  private() {
    return { ok: true };
  }

  @Get('free')
  @SkipRateLimit()
  free() {
    return { ok: true };
  }
}

/** Requests per client in one window: a light one, one a little past the limit, an abuser. */
const LOAD = { light: 5, over: 12, abuser: 30 };
const TOTAL = LOAD.light + LOAD.over + LOAD.abuser;

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

describe.each(HTTP_PLATFORMS)('the limit advisor on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', (target: StorageTarget) => {
    let app: INestApplication;
    let storage: RateLimitStorage;
    let clock: FakeClock;
    const start = async (storageFor: (clock: FakeClock) => RateLimitStorage = target.create, advisor: object = {}) => {
      await redis.flush();
      clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 5));
      storage = storageFor(clock);
      app = await createScenarioApp([QuotesController], { storage, advisor: { clock: clock.now, ...advisor } }, { platform });
    };
    afterEach(async () => {
      await app?.close();
      await storage?.close?.();
    });

    const send = async (path: string, load: Record<string, number>) => {
      for (const [client, count] of Object.entries(load)) {
        for (let i = 0; i < count; i++) await request(app.getHttpServer()).get(path).set('x-client', client);
      }
    };
    const policy = async (name: string): Promise<AdvisorPolicyReport> => {
      const report = await app.get(RateLimitService).advisorReport({ candidates: [11, 20, 29, 30] });
      const found = report.policies.find((entry) => entry.name === name);
      if (found === undefined) throw new Error(`no policy ${name} in ${report.policies.map((entry) => entry.name).join(', ')}`);
      return found;
    };
    const at = (report: AdvisorPolicyReport, limit: number) => report.candidates.find((entry) => entry.limit === limit)!;

    it('counts every attempt, refused ones included, and says what each candidate limit would refuse', async () => {
      await start();
      await send('/quotes', LOAD);
      const report = await policy('QuotesController.quotes');
      expect(report).toMatchObject({ limit: 10, windowSeconds: 60, algorithm: 'fixed-window', mode: 'enforce', estimate: 'exact' });
      expect(report.clients).toBe(3);
      expect(report.requests).toBe(TOTAL);
      // refused: 2 of the 12, 20 of the 30
      expect(report.denied).toBe(2 + 20);
      expect(report.shadowDenied).toBe(0);
      // the current limit: the two past it, and every request past the 10th of its client
      expect(at(report, 10)).toMatchObject({ exact: true, clientsDenied: 2 / 3, requestsDenied: 22 / TOTAL });
      // raising it: what the abuser's refused attempts would have got through
      expect(at(report, 11)).toMatchObject({ exact: true, clientsDenied: 2 / 3, requestsDenied: 20 / TOTAL });
      expect(at(report, 20)).toMatchObject({ exact: true, clientsDenied: 1 / 3, requestsDenied: 10 / TOTAL });
      expect(at(report, 29)).toMatchObject({ clientsDenied: 1 / 3, requestsDenied: 1 / TOTAL });
      // 31 is no threshold (30 and 32 are): the share is bounded by theirs
      expect(at(report, 30)).toMatchObject({ exact: false, clientsDeniedRange: { low: 0, high: 1 / 3 }, requestsDeniedRange: { low: 0, high: 1 / TOTAL } });
      expect(at(report, 40)).toMatchObject({ clientsDenied: 0, requestsDenied: 0 });
      // lowering it (the default spread: a quarter, a half, twice, four times)
      expect(at(report, 5)).toMatchObject({ exact: true, clientsDenied: 2 / 3, requestsDenied: (12 - 5 + 30 - 5) / TOTAL });
      expect(report.candidates.map((entry) => entry.limit)).toEqual([3, 5, 10, 11, 20, 29, 30, 40]);
      // the heaviest first, as the policy keys them
      expect(report.top.map(({ identity, requests }) => [identity, requests])).toEqual([
        ['abuser', 30],
        ['over', 12],
        ['light', 5],
      ]);
      // at most 0.1% of clients: none may be refused. The abuser reached 30 and not 32 (31 is no
      // threshold), so 31 is the smallest limit sure to refuse nobody
      expect(report.suggested).toBe(31);
      expect(report.suggestion).toMatchObject({ limit: 31, clientsDenied: 0, clients: 3, requests: TOTAL });
      expect(report.timeline.reduce((sum, point) => sum + point.denied, 0)).toBe(22);
    });

    it('records every request through its log: drained when full and before a report, none lost and none twice', async () => {
      await start();
      // 1,300 requests: the log (OBSERVATION_LOG_CAPACITY, 512) fills twice, and 276 wait for the report
      const clients = Array.from({ length: 130 }, (_, i) => `client-${i}`);
      for (let round = 0; round < 10; round++) {
        await Promise.all(clients.map((client) => request(app.getHttpServer()).get('/quotes').set('x-client', client).expect(200)));
      }
      const report = await policy('QuotesController.quotes');
      expect([report.clients, report.requests, report.denied]).toEqual([130, 1300, 0]);
      // each client reached 10, and none went past it
      expect(at(report, 5)).toMatchObject({ exact: true, clientsDenied: 1, requestsDenied: 650 / 1300 });
      expect(at(report, 10)).toMatchObject({ exact: true, clientsDenied: 0, requestsDenied: 0 });
    });

    it('tells a shadow policy\'s would-be refusals apart from real ones', async () => {
      await start();
      await send('/search', LOAD);
      const report = await policy('QuotesController.search');
      expect(report.mode).toBe('shadow');
      expect(report.denied).toBe(0);
      expect(report.shadowDenied).toBe(22);
      expect(at(report, 10)).toMatchObject({ clientsDenied: 2 / 3, requestsDenied: 22 / TOTAL });
    });

    it('counts each window apart: a client is counted once per window it was seen in', async () => {
      await start();
      await send('/quotes', { steady: 8 });
      clock.advance(60_000);
      await send('/quotes', { steady: 8 });
      const report = await policy('QuotesController.quotes');
      expect(report.clients).toBe(2);
      expect(report.requests).toBe(16);
      expect(at(report, 5)).toMatchObject({ clientsDenied: 1, requestsDenied: 6 / 16 });
      expect(at(report, 10)).toMatchObject({ clientsDenied: 0 });
    });

    it('leaves out routes with advise: false and unlimited ones, and looks back only over the period', async () => {
      await start();
      await send('/private', { light: 3 });
      await send('/free', { light: 3 });
      await send('/quotes', { light: 3 });
      const service = app.get(RateLimitService);
      const names = (await service.advisorReport()).policies.map((entry) => entry.name);
      expect(names).toEqual(['QuotesController.quotes']);
      clock.advance(2 * 3_600_000);
      const later = await service.advisorReport();
      expect(later.policies.every((entry) => entry.clients === 0 && entry.requests === 0)).toBe(true);
    });

    it('shows keyed hashes for identities under redactIdentities', async () => {
      const secret = 'a secret of sixteen+ characters';
      await start(target.create, { redactIdentities: { secret } });
      await send('/quotes', { alice: 2 });
      const report = await policy('QuotesController.quotes');
      expect(report.top.map((entry) => entry.identity)).toEqual([redactIdentity('alice', Buffer.from(secret))]);
      expect(JSON.stringify(report)).not.toContain('alice');
    });

    it('refuses a query it cannot read, naming what is wrong', async () => {
      await start();
      await expect(app.get(RateLimitService).advisorReport({ target: 2 })).rejects.toThrow(/target must be a share/);
      await expect(app.get(RateLimitService).advisorReport({ candidates: [0] })).rejects.toThrow(/positive integers/);
    });

    if (target.name === 'redis') {
      it('describes its policies again to a Redis that lost them (a restart, FLUSHDB)', async () => {
        await start();
        await send('/quotes', { a: 2 });
        expect((await policy('QuotesController.quotes')).requests).toBe(2);
        await redis.flush();
        await send('/quotes', { a: 3 });
        const report = await policy('QuotesController.quotes');
        expect(report.requests).toBe(3);
        expect(report.clients).toBe(1);
      });

      it("counts the attempts the block cache would have refused without asking Redis", async () => {
        // the default block cache: a client Redis denied is refused locally until its window ends
        await start((fake) => new RedisStorage({ url: redis.url, clock: fake.now }));
        await send('/quotes', { abuser: 30 });
        const report = await policy('QuotesController.quotes');
        expect(report.requests).toBe(30);
        expect(at(report, 20)).toMatchObject({ clientsDenied: 1, requestsDenied: 10 / 30 });
      });
    }
  });
});

describe('the limit advisor off', () => {
  it('is not asked for anything, and says how to turn it on', async () => {
    const app = await createScenarioApp([QuotesController], {});
    try {
      await request(app.getHttpServer()).get('/quotes').set('x-client', 'a').expect(200);
      await expect(app.get(RateLimitService).advisorReport()).rejects.toThrow(/advisor: true/);
    } finally {
      await app.close();
    }
  });

  it('fails at start-up on bad settings, naming them', async () => {
    await expect(createScenarioApp([QuotesController], { advisor: { trackedIdentities: 0 } })).rejects.toThrow(/trackedIdentities/);
    await expect(createScenarioApp([QuotesController], { advisor: { redactIdentities: { secret: 'short' } } })).rejects.toThrow(/secret/);
    await expect(createScenarioApp([QuotesController], { dashboard: { path: 'admin', guard: class {} as never } })).rejects.toThrow(/advisor: true/);
  });
});
