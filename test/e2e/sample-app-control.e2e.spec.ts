import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { get as httpGet, type ClientRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import request, { type Response } from 'supertest';
import { RateLimitService, RedisStorage, type RateLimitStorage } from '../../lib/index.js';
import { AppModule } from '../../sample-app/app.module.js';
import { LOGIN_BUCKET } from '../../sample-app/auth/auth.controller.js';
import { REPORT_DELAY, type ReportDelay } from '../../sample-app/reports/reports.service.js';
import { expectTooManyRequests, FREE_USER, PAID_USER, remaining } from '../support/assertions.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, HTTP_PLATFORMS, storageKinds, type HttpPlatform } from '../support/scenario-app.js';

/**
 * The sample app's routes that use the control features: brute-force protection on
 * `POST /auth/login` (count: 'failures', blockFor, RateLimitService.reset), `GET /rate_limit`
 * (RateLimitService.peek) and `GET /reports/:symbol` (@ConcurrencyLimit).
 *
 * The apps trust the proxy and every request names its client in X-Forwarded-For: so two clients
 * are two addresses, and the identities the tests hand to RateLimitService are known. It also
 * proves that the handlers build identities from the address the guard counts by.
 */
const CLIENT = '203.0.113.7';
const OTHER_CLIENT = '203.0.113.8';
const GOOD = { username: 'paul', password: 'paid-password' };
const BAD = { username: 'paul', password: 'guess' };
/** 20 s into a minute: fixed windows end at :00, 40 s away. */
const START = Date.UTC(2030, 0, 1, 9, 30, 20);
const WINDOW_END_S = Date.UTC(2030, 0, 1, 9, 31, 0) / 1000;
const CONCURRENCY_POLICY = '"ReportsController.getReport";q=2;qu="concurrent-requests"';

/** Holds every report in its handler until the test lets it go: the REPORT_DELAY of these apps. */
class ReportGate {
  private readonly held: { symbol: string; release: () => void }[] = [];

  readonly delay: ReportDelay = (symbol) => new Promise<void>((release) => this.held.push({ symbol, release }));

  /** Reports in their handler now. */
  get pending(): number {
    return this.held.length;
  }

  has(symbol: string): boolean {
    return this.held.some((report) => report.symbol === symbol);
  }

  release(symbol: string): void {
    const index = this.held.findIndex((report) => report.symbol === symbol);
    if (index === -1) throw new Error(`no report of ${symbol} is being built`);
    this.held.splice(index, 1)[0].release();
  }

  releaseAll(): void {
    for (const report of this.held.splice(0)) report.release();
  }
}

/** Polls (real time: it waits for sockets and Redis, not for the limits' clock). */
async function until(condition: () => boolean, what: string, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

let redis: TestRedis;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await redis?.stop();
});

/** The sample app on `storage`, trusting the proxy, its reports held by `gate`. */
async function startSampleApp(platform: HttpPlatform, storage: RateLimitStorage, gate: ReportGate): Promise<INestApplication> {
  const moduleRef = await Test.createTestingModule({ imports: [AppModule.register({ storage })] })
    .overrideProvider(REPORT_DELAY)
    .useValue(gate.delay)
    .compile();
  return createHttpApp(moduleRef, { platform, trustProxy: true });
}

/** Requests to `app` from a client address (X-Forwarded-For). */
function clientOf(app: () => INestApplication) {
  const http = () => request(app().getHttpServer());
  return {
    login: (credentials: object, ip = CLIENT) => http().post('/auth/login').set('X-Forwarded-For', ip).send(credentials),
    get: (path: string, headers: Record<string, string> = {}, ip = CLIENT) => http().get(path).set('X-Forwarded-For', ip).set(headers),
    graphql: (query: string, ip = CLIENT) => http().post('/graphql').set('X-Forwarded-For', ip).send({ query }),
  };
}

describe.each(HTTP_PLATFORMS)('sample app, control features, on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', ({ create }) => {
    let app: INestApplication;
    let clock: FakeClock;
    let gate: ReportGate;
    const { login, get, graphql } = clientOf(() => app);

    beforeEach(async () => {
      await redis.flush();
      clock = new FakeClock(START);
      gate = new ReportGate();
      app = await startSampleApp(platform, create(clock), gate);
    });

    afterEach(async () => {
      gate?.releaseAll(); // no report may keep the server from closing
      await app?.close();
    });

    describe('POST /auth/login (5 failed attempts/minute per IP, then 15 minutes locked out)', () => {
      it('counts only failed attempts: good logins never use the budget, the attempt after 5 failures in a minute is refused', async () => {
        for (let i = 0; i < 8; i++) {
          const ok = await login(GOOD).expect(200);
          expect(ok.body).toEqual({ token: 'paid-token', tokenType: 'Bearer', user: { id: 'u-paid', name: 'Paul Paid', plan: 'paid' } });
          expect(ok.headers['ratelimit-policy']).toBe('"login";q=5;w=60');
        }
        for (let i = 0; i < 5; i++) {
          const failed = await login(BAD).expect(401);
          expect(failed.body).toMatchObject({ statusCode: 401, message: 'Invalid username or password' });
          expect(remaining(failed)).toBe(4 - i);
        }
        expectTooManyRequests(await login(BAD));
      });

      it('forgets the IP\'s failed attempts when it logs in successfully (RateLimitService.reset)', async () => {
        const service = app.get(RateLimitService);
        for (let i = 0; i < 4; i++) await login(BAD).expect(401);
        expect((await service.peek(`ip:${CLIENT}`, LOGIN_BUCKET)).remaining).toBe(1);

        await login(GOOD).expect(200);
        expect(await service.peek(`ip:${CLIENT}`, LOGIN_BUCKET)).toMatchObject({ allowed: true, limit: 5, remaining: 5 });

        // five fresh attempts, as if the four before never happened
        for (let i = 0; i < 5; i++) await login(BAD).expect(401);
        expectTooManyRequests(await login(BAD));
      });

      it('locks an IP out for 15 minutes from the attempt after its 5th failure in a minute, even with the right password', async () => {
        for (let i = 0; i < 5; i++) await login(BAD).expect(401);

        const denied = await login(BAD);
        expectTooManyRequests(denied);
        expect(denied.headers['retry-after']).toBe('900');
        expect(denied.headers['ratelimit-policy']).toBe('"login";q=5;w=60');
        expect(denied.headers['ratelimit']).toBe('"login";r=0;t=900');

        // Another client is not concerned.
        await login(GOOD, OTHER_CLIENT).expect(200);

        // The minute's window is long over; the lockout is not, and the password does not matter.
        clock.advance(60_000);
        const stillLocked = await login(GOOD);
        expectTooManyRequests(stillLocked);
        expect(stillLocked.headers['retry-after']).toBe('840');

        clock.advance(839_999);
        const lastMoment = await login(GOOD);
        expectTooManyRequests(lastMoment);
        expect(lastMoment.headers['retry-after']).toBe('1');

        clock.advance(1);
        await login(GOOD).expect(200);
        // and the budget is whole again
        for (let i = 0; i < 5; i++) expect(remaining(await login(BAD).expect(401))).toBe(4 - i);
        expectTooManyRequests(await login(BAD));
      });
    });

    describe('GET /rate_limit (the caller\'s quote quota, uncharged)', () => {
      it('shows the IP\'s quota, and calling it changes nothing', async () => {
        const fresh = await get('/rate_limit').expect(200);
        expect(fresh.body).toEqual({ resources: { quotes: { limit: 100, remaining: 100, reset: expect.any(Number) } } });

        for (const symbol of ['AAPL', 'MSFT']) await get(`/quotes/${symbol}`).expect(200);
        // a GraphQL quote draws on the same budget
        const viaGraphql = await graphql('{ quote(symbol: "IBM") { price } }').expect(200);
        expect(viaGraphql.body.errors).toBeUndefined();

        for (let i = 0; i < 5; i++) {
          const shown = await get('/rate_limit').expect(200);
          expect(shown.body).toEqual({ resources: { quotes: { limit: 100, remaining: 97, reset: WINDOW_END_S } } });
          // its own limit's headers, not the quotes'
          expect(shown.headers['ratelimit-policy']).toBe('"QuotaController.show";q=60;w=60');
        }
        // Nothing was charged: the next quote leaves 96.
        expect(remaining(await get('/quotes/AAPL').expect(200))).toBe(96);

        // Another client has its own quota.
        expect((await get('/rate_limit', {}, OTHER_CLIENT).expect(200)).body.resources.quotes).toMatchObject({ limit: 100, remaining: 100 });

        // In the next window it is whole again.
        clock.advance(40_000);
        expect((await get('/rate_limit').expect(200)).body.resources.quotes).toEqual({ limit: 100, remaining: 100, reset: expect.any(Number) });
      });

      it('shows a paid user the 1000/minute of its own budget, a free user the IP\'s', async () => {
        await get('/quotes/AAPL').expect(200); // anonymous: the IP's budget

        const paid = await get('/rate_limit', PAID_USER).expect(200);
        expect(paid.body).toEqual({ resources: { quotes: { limit: 1000, remaining: 1000, reset: expect.any(Number) } } });

        for (let i = 0; i < 2; i++) await get('/quotes/AAPL', PAID_USER).expect(200);
        expect((await get('/rate_limit', PAID_USER).expect(200)).body).toEqual({
          resources: { quotes: { limit: 1000, remaining: 998, reset: WINDOW_END_S } },
        });
        // from any address: the budget is the user's
        expect((await get('/rate_limit', PAID_USER, OTHER_CLIENT).expect(200)).body.resources.quotes.remaining).toBe(998);

        // The paid quotes left the IP's budget alone; a free token sees that budget.
        expect((await get('/rate_limit').expect(200)).body.resources.quotes).toMatchObject({ limit: 100, remaining: 99 });
        expect((await get('/rate_limit', FREE_USER).expect(200)).body.resources.quotes).toMatchObject({ limit: 100, remaining: 99 });
      });

      it('has a limit of its own, 60/minute, which leaves the quotes alone', async () => {
        for (let batch = 0; batch < 6; batch++) {
          const responses = await Promise.all(Array.from({ length: 10 }, () => get('/rate_limit')));
          for (const response of responses) expect(response.status).toBe(200);
        }
        const denied = await get('/rate_limit');
        expectTooManyRequests(denied);
        expect(denied.headers['ratelimit-policy']).toBe('"QuotaController.show";q=60;w=60');

        expect(remaining(await get('/quotes/AAPL').expect(200))).toBe(99);
      });
    });

    describe('GET /reports/:symbol (@ConcurrencyLimit(2) per IP)', () => {
      it('builds 2 reports of a client at once, refuses a 3rd with the concurrency policy, and takes one again when a report finishes', async () => {
        const first = get('/reports/acme').then((response) => response);
        const second = get('/reports/IBM').then((response) => response);
        await until(() => gate.pending === 2, 'two reports in their handler');

        const third = await get('/reports/MSFT');
        expectTooManyRequests(third);
        expect(third.headers['retry-after']).toBe('1');
        expect(third.headers['ratelimit-policy']).toBe(CONCURRENCY_POLICY);
        expect(gate.has('MSFT')).toBe(false); // refused before the handler

        // Another client has its own two slots.
        const other = get('/reports/ORCL', {}, OTHER_CLIENT).then((response) => response);
        await until(() => gate.has('ORCL'), "the other client's report in its handler");

        gate.release('ACME');
        const done = await first;
        expect(done.status).toBe(200);
        expect(done.body).toEqual({ symbol: 'ACME', price: expect.any(Number), low: expect.any(Number), high: expect.any(Number), currency: 'USD' });
        expect(done.body.low).toBeLessThan(done.body.price);
        expect(done.body.high).toBeGreaterThan(done.body.price);

        // The finished report's slot is free again.
        const fourth = get('/reports/MSFT').then((response) => response);
        await until(() => gate.has('MSFT'), 'the 4th report in its handler');
        expectTooManyRequests(await get('/reports/AAPL'));

        gate.releaseAll();
        for (const response of await Promise.all([second, other, fourth])) expect(response.status).toBe(200);
      });

      it('gives the slot back when a report fails', async () => {
        // The symbol pipe runs after the slot is taken: each 400 must give it back.
        for (let i = 0; i < 4; i++) await get('/reports/bad!symbol').expect(400);
        const ok = get('/reports/ACME').then((response) => response);
        const alsoOk = get('/reports/IBM').then((response) => response);
        await until(() => gate.pending === 2, 'two reports in their handler');
        gate.releaseAll();
        expect((await ok).status).toBe(200);
        expect((await alsoOk).status).toBe(200);
      });

      it('keeps the slot of a client that hangs up until its report is done: hanging up frees nothing', async () => {
        const server: Server = app.getHttpServer();
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        let abandoned: ClientRequest | undefined;
        try {
          const { port } = server.address() as AddressInfo;
          let closed = false;
          abandoned = httpGet({ host: '127.0.0.1', port, path: '/reports/GONE', headers: { 'X-Forwarded-For': CLIENT }, agent: false });
          abandoned.on('error', () => {}); // the hang-up below
          abandoned.on('close', () => (closed = true));
          const kept = get('/reports/IBM').then((response) => response);
          await until(() => gate.pending === 2, 'two reports in their handler');
          expectTooManyRequests(await get('/reports/MSFT'));

          abandoned.destroy();
          await until(() => closed, 'the hung-up connection closed');
          // Its report is still being built, so its slot is still taken.
          expectTooManyRequests(await get('/reports/MSFT'));
          expect(gate.has('GONE')).toBe(true);

          gate.release('GONE'); // the report is done, for nobody: now its slot is free
          const { response: admitted } = await admittedWhenFree('/reports/AAPL', 'AAPL');

          gate.releaseAll();
          expect((await kept).status).toBe(200);
          expect((await admitted).status).toBe(200);
        } finally {
          abandoned?.destroy();
          server.closeAllConnections();
          await new Promise((resolve) => server.close(resolve));
        }
      });

      /**
       * Asks for a report until one gets a slot (a release is asynchronous). Once one is in its
       * handler, answers its response to come, wrapped: an async function would wait for it.
       */
      async function admittedWhenFree(path: string, symbol: string): Promise<{ response: Promise<Response> }> {
        const deadline = Date.now() + 3_000;
        for (;;) {
          let answer: Response | undefined;
          const response = get(path).then((r) => (answer = r));
          await until(() => answer !== undefined || gate.has(symbol), `${path} answered or in its handler`);
          if (gate.has(symbol)) return { response };
          if (answer!.status !== 429) throw new Error(`unexpected ${answer!.status} for ${path}`);
          if (Date.now() > deadline) throw new Error(`${path} still refused 3 s after a slot was freed`);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }
    });
  });
});

describe.each(HTTP_PLATFORMS)('sample app, control features, two instances sharing Redis, on %s', (platform) => {
  let apps: INestApplication[] = [];
  let clock: FakeClock;
  let gate: ReportGate;
  const [a, b] = [clientOf(() => apps[0]), clientOf(() => apps[1])];

  beforeEach(async () => {
    await redis.flush();
    clock = new FakeClock(START);
    gate = new ReportGate();
    // As in production: each instance with its block cache, which answers known denials locally.
    apps = [
      await startSampleApp(platform, new RedisStorage({ url: redis.url, clock: clock.now }), gate),
      await startSampleApp(platform, new RedisStorage({ url: redis.url, clock: clock.now }), gate),
    ];
  });

  afterEach(async () => {
    gate?.releaseAll();
    await Promise.all(apps.map((app) => app.close()));
  });

  it('a lockout earned on one instance holds on the other; deleting its key by hand does not lift it, RateLimitService.reset does, everywhere', async () => {
    for (let i = 0; i < 5; i++) await (i % 2 ? a : b).login(BAD).expect(401);
    const denied = await a.login(BAD);
    expectTooManyRequests(denied);
    expect(denied.headers['retry-after']).toBe('900');

    const elsewhere = await b.login(GOOD);
    expectTooManyRequests(elsewhere);
    expect(elsewhere.headers['retry-after']).toBe('900');
    expectTooManyRequests(await a.login(GOOD));

    // Both block caches now hold the denial: deleting the key in Redis by hand lifts nothing.
    const keys = await redis.client().keys('rl:*');
    expect(keys).toEqual([`rl:{ip:${CLIENT}}:login:fw1m`]);
    await redis.client().del(...keys);
    for (const instance of [a, b]) expectTooManyRequests(await instance.login(GOOD));

    // RateLimitService.reset lifts it from one instance; the other's block cache drops it within 100 ms.
    await apps[1].get(RateLimitService).reset(`ip:${CLIENT}`, LOGIN_BUCKET);
    const lifted = Date.now();
    for (;;) {
      const attempt = await a.login(GOOD);
      if (attempt.status === 200) break;
      expect(attempt.status).toBe(429);
      if (Date.now() - lifted > 1_000) throw new Error('instance A still refuses 1 s after the reset');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(Date.now() - lifted).toBeLessThan(500); // 100 ms promised; the rest is slack for a loaded machine
    await b.login(GOOD).expect(200);
  });

  it('counts report slots across instances: 2 per client in all, not per instance', async () => {
    const first = a.get('/reports/ACME').then((response) => response);
    const second = b.get('/reports/IBM').then((response) => response);
    await until(() => gate.pending === 2, 'two reports in their handler');

    for (const instance of [a, b]) {
      const refused = await instance.get('/reports/MSFT');
      expectTooManyRequests(refused);
      expect(refused.headers['ratelimit-policy']).toBe(CONCURRENCY_POLICY);
    }

    gate.release('ACME');
    expect((await first).status).toBe(200);
    const third = b.get('/reports/MSFT').then((response) => response);
    await until(() => gate.has('MSFT'), 'the freed slot taken on the other instance');

    gate.releaseAll();
    expect((await second).status).toBe(200);
    expect((await third).status).toBe(200);
  });

  it('shows the same quota on both instances', async () => {
    for (let i = 0; i < 3; i++) await (i % 2 ? a : b).get('/quotes/AAPL').expect(200);
    for (const instance of [a, b]) {
      expect((await instance.get('/rate_limit').expect(200)).body).toEqual({
        resources: { quotes: { limit: 100, remaining: 97, reset: WINDOW_END_S } },
      });
    }
  });
});
