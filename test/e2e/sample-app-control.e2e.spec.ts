import 'reflect-metadata';
import { Body, Controller, HttpCode, Post, Req, UnauthorizedException, type INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { get as httpGet, type ClientRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import request, { type Response } from 'supertest';
import { MemoryStorage, RateLimit, RateLimitService, RedisStorage, type RateLimitCheck, type RateLimitStatus, type RateLimitStorage } from '../../lib/index.js';
import { identityKeyPart } from '../../lib/keys/storage-key.js';
import { AppModule } from '../../sample-app/app.module.js';
import { LOGIN_ACCOUNT_LIMIT, LOGIN_BUCKET, LOGIN_IP_BUCKET } from '../../sample-app/auth/auth.controller.js';
import { ipKey, type AddressedRequest } from '../../sample-app/client-key.js';
import { REPORT_DELAY, type ReportDelay } from '../../sample-app/reports/reports.service.js';
import { UsersService } from '../../sample-app/users/users.service.js';
import { expectTooManyRequests, FREE_USER, PAID_USER, remaining } from '../support/assertions.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, createScenarioApp, HTTP_PLATFORMS, storageKinds, type HttpPlatform } from '../support/scenario-app.js';
import { exact } from '../support/exact.js';
import { eventually } from '../support/until.js';

/**
 * The sample app's routes that use the control features: brute-force protection on
 * `POST /auth/login` (count: 'failures' per IP; RateLimitService.enforce with blockFor per
 * account and IP, and reset), `GET /rate_limit`
 * (RateLimitService.peek) and `GET /reports/:symbol` (@ConcurrencyLimit).
 *
 * The apps trust the proxy and every request names its client in X-Forwarded-For: so two clients
 * are two addresses, and the identities the tests hand to RateLimitService are known. It also
 * proves that the handlers build identities from the address the guard counts by.
 */
const CLIENT = '203.0.113.7';
const OTHER_CLIENT = '203.0.113.8';
/** The victim's account: paul / paid-password. */
const GOOD = { username: 'paul', password: 'paid-password' };
const BAD = { username: 'paul', password: 'guess' };
/** The attacker's own account. */
const FIONA = { username: 'fiona', password: 'free-password' };
/** 20 s into a minute: fixed windows end at :00, 40 s away. */
const START = Date.UTC(2030, 0, 1, 9, 30, 20);
const WINDOW_END_S = Date.UTC(2030, 0, 1, 9, 31, 0) / 1000;
/** The end of START's hour, when the login route's 20/hour window ends. */
const HOUR_END_S = Date.UTC(2030, 0, 1, 10, 0, 0) / 1000;
/** The login route's own limit: failures per IP, across accounts. */
const IP_POLICY = '"login-ip";q=20;w=3600';
/** The handler's limit: failures per account and IP. */
const ACCOUNT_POLICY = '"login";q=5;w=60';
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

/** The identity the login handler counts an account's failures from an address under, written out. */
function loginIdentityOf(username: string, ip = CLIENT): string {
  return `ip:${ip}|user:${username}`;
}

/** An account's failed-login budget from an address, uncharged. */
function accountStatus(app: INestApplication, username: string, ip = CLIENT): Promise<RateLimitStatus> {
  return app.get(RateLimitService).peek(loginIdentityOf(username, ip), LOGIN_ACCOUNT_LIMIT);
}

/** Waits until the IP's budget of failed logins (across accounts) has `left`, once refunds have landed. */
function ipLeft(app: INestApplication, left: number, ip = CLIENT): Promise<void> {
  return eventually(async () => expect((await app.get(RateLimitService).peek(`ip:${ip}`, LOGIN_IP_BUCKET)).remaining).toBe(left));
}

/** `200`, `401`, or `429 <policy>`: which limit refused it. */
function outcome(response: Response): string {
  if (response.status !== 429) return String(response.status);
  return `429 ${/^"([^"]+)"/.exec(String(response.headers['ratelimit-policy']))?.[1]}`;
}

function tally(outcomes: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
  return counts;
}

/**
 * The attack, from one address: 10 cycles of 4 wrong guesses at paul's password, then a good
 * login as fiona, the attacker's own account. `settle(failures)` runs after each of fiona's
 * logins that succeeded, with the guesses made so far: it waits for that login's refund to land,
 * so the count does not depend on when it does. Answers the outcome of each request.
 */
async function guessWithOwnAccount(
  send: (credentials: object) => Promise<Response>,
  settle: (failures: number) => Promise<void>,
): Promise<{ victim: string[]; own: string[] }> {
  const victim: string[] = [];
  const own: string[] = [];
  for (let cycle = 0; cycle < 10; cycle++) {
    for (let guess = 0; guess < 4; guess++) victim.push(outcome(await send({ username: 'paul', password: `guess-${cycle}-${guess}` })));
    const mine = await send(FIONA);
    own.push(outcome(mine));
    if (mine.status === 200) await settle(victim.length);
  }
  return { victim, own };
}

/**
 * The recipe the sample app had before, kept to measure the attack against: one counter of
 * failures per IP, which any successful login reset.
 */
@Controller('auth')
class OldRecipeAuthController {
  constructor(
    private readonly users: UsersService,
    private readonly rateLimits: RateLimitService,
  ) {}

  @Post('login')
  @HttpCode(200)
  @RateLimit('5/minute', { bucket: 'login', count: 'failures', blockFor: '15 minutes' })
  async login(@Body() body: { username?: unknown; password?: unknown }, @Req() request: AddressedRequest) {
    const session = this.users.login(body.username, body.password);
    if (!session) throw new UnauthorizedException('Invalid username or password');
    await this.rateLimits.reset(ipKey(request), 'login'); // forgets every account's failures from this IP
    return session;
  }
}

function startOldRecipeApp(platform: HttpPlatform, storage: RateLimitStorage): Promise<INestApplication> {
  return createScenarioApp([OldRecipeAuthController], { storage }, { providers: [UsersService], platform, trustProxy: true });
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
  const moduleRef = await Test.createTestingModule({ imports: [AppModule.register({ storage, storagePolicy: exact({}) })] })
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

    describe('POST /auth/login (failed logins: 5/minute per account and IP, then 15 minutes locked out; 20/hour per IP)', () => {
      it('counts only failed attempts: good logins use neither counter; the attempt after an account\'s 5th failure in a minute is refused', async () => {
        for (let i = 0; i < 8; i++) {
          const ok = await login(GOOD).expect(200);
          expect(ok.body).toEqual({ token: 'paid-token', tokenType: 'Bearer', user: { id: 'u-paid', name: 'Paul Paid', plan: 'paid' } });
          expect(ok.headers['ratelimit-policy']).toBe(IP_POLICY); // the route's own limit
        }
        await ipLeft(app, 20);
        expect(await accountStatus(app, 'paul')).toMatchObject({ allowed: true, remaining: 5 });

        for (let i = 0; i < 5; i++) {
          const failed = await login(BAD).expect(401);
          expect(failed.body).toMatchObject({ statusCode: 401, message: 'Invalid username or password' });
          expect(failed.headers['ratelimit-policy']).toBe(IP_POLICY);
          expect(remaining(failed)).toBe(19 - i);
          expect((await accountStatus(app, 'paul')).remaining).toBe(4 - i);
        }
        const denied = await login(BAD);
        expectTooManyRequests(denied);
        expect(denied.headers['ratelimit-policy']).toBe(ACCOUNT_POLICY); // refused by the handler's enforce
        // the refusal is a failure too: it keeps its unit of the IP's 20
        await ipLeft(app, 14);
      });

      it('counts every spelling of a username against that account: trimmed and lowercased', async () => {
        for (const username of ['paul', ' PAUL ', 'Paul', 'paul\t', 'pAuL']) await login({ username, password: 'guess' }).expect(401);
        expect(await accountStatus(app, 'paul')).toMatchObject({ allowed: false, remaining: 0 });
        expectTooManyRequests(await login(GOOD));
      });

      it('locks an account out from that IP for 15 minutes from the attempt after its 5th failure in a minute, even with the right password', async () => {
        for (let i = 0; i < 5; i++) await login(BAD).expect(401);

        const denied = await login(BAD);
        expectTooManyRequests(denied);
        expect(denied.headers['retry-after']).toBe('900');
        expect(denied.headers['ratelimit-policy']).toBe(ACCOUNT_POLICY);
        expect(denied.headers['ratelimit']).toBe('"login";r=0;t=900');

        // The victim, from anywhere else, is not concerned.
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
        // and the account's budget is whole again
        for (let i = 0; i < 5; i++) {
          await login(BAD).expect(401);
          expect((await accountStatus(app, 'paul')).remaining).toBe(4 - i);
        }
        expectTooManyRequests(await login(BAD));
      });

      it('a user who mistyped 4 times and then logs in gets a fresh 5 for their account; the IP\'s count of failures stays', async () => {
        for (let i = 0; i < 4; i++) await login(BAD).expect(401);
        expect((await accountStatus(app, 'paul')).remaining).toBe(1);

        await login(GOOD).expect(200);
        expect(await accountStatus(app, 'paul')).toMatchObject({ allowed: true, limit: 5, remaining: 5 });
        await ipLeft(app, 16); // the success got its own unit back, and forgave none of the 4

        // five fresh attempts, as if the four before never happened
        for (let i = 0; i < 5; i++) await login(BAD).expect(401);
        expectTooManyRequests(await login(BAD));
        await ipLeft(app, 10);
      });

      it('another user behind the same IP is not locked out by failures on another account, until the IP\'s 20 failures an hour', async () => {
        for (let i = 0; i < 5; i++) await login(BAD).expect(401);
        expectTooManyRequests(await login(BAD)); // paul is locked out from this IP: 6 failures

        await login(FIONA).expect(200);
        await ipLeft(app, 14);
        for (let i = 0; i < 13; i++) await login({ username: `stranger-${i}`, password: 'guess' }).expect(401);
        await login(FIONA).expect(200); // 19 failures: still in
        await ipLeft(app, 1);
        await login({ username: 'stranger-13', password: 'guess' }).expect(401); // the 20th

        const capped = await login(FIONA);
        expectTooManyRequests(capped);
        expect(capped.headers['ratelimit-policy']).toBe(IP_POLICY);
        expect(capped.headers['retry-after']).toBe(String(HOUR_END_S - START / 1000)); // the hour's window ends at 10:00
        expect(await accountStatus(app, 'fiona')).toMatchObject({ allowed: true, remaining: 5 }); // her own budget was never touched
        // another IP is not capped
        await login(FIONA, OTHER_CLIENT).expect(200);

        clock.advance((HOUR_END_S - START / 1000) * 1000);
        await login(FIONA).expect(200);
      });

      it('stops the attack that reset the IP\'s budget: 10 cycles of 4 guesses at paul and a login as fiona let 5 guesses reach the password check, not 40', async () => {
        const service = app.get(RateLimitService);
        const { victim, own } = await guessWithOwnAccount(login, (failures) =>
          eventually(async () => expect((await service.peek(`ip:${CLIENT}`, LOGIN_IP_BUCKET)).remaining).toBe(20 - failures)),
        );
        // Exactly 5 of paul's 40 wrong guesses were checked (401); his account, from this IP, then
        // refused them (429 "login") until the IP had 20 failures, after which the route's limit
        // refused everything from the IP, the attacker's own logins included (429 "login-ip").
        expect(tally(victim)).toEqual({ '401': 5, '429 login': 15, '429 login-ip': 20 });
        expect(own).toEqual([...Array(4).fill('200'), ...Array(6).fill('429 login-ip')]);
        expect(await accountStatus(app, 'paul')).toMatchObject({ allowed: false, retryAfterMs: 900_000 });
        // and the victim still logs in from his own address
        await login(GOOD, OTHER_CLIENT).expect(200);
      });

      it('the same attack against the old recipe (one counter per IP, reset by any successful login) reached all 40 guesses', async () => {
        const old = await startOldRecipeApp(platform, create(clock));
        try {
          const service = old.get(RateLimitService);
          const { victim, own } = await guessWithOwnAccount(clientOf(() => old).login, () =>
            eventually(async () => expect((await service.peek(`ip:${CLIENT}`, 'login')).remaining).toBe(5)),
          );
          // The number the attack reached: 40 wrong guesses at paul checked in 10 cycles, 8 times
          // the 5 the limit promised; the attacker's own logins kept the budget whole.
          expect(tally(victim)).toEqual({ '401': 40 });
          expect(own).toEqual(Array(10).fill('200'));
        } finally {
          await old.close();
        }
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

  it('an account\'s lockout earned on one instance holds on the other; deleting its key by hand does not lift it, RateLimitService.reset does, everywhere', async () => {
    for (let i = 0; i < 5; i++) await (i % 2 ? a : b).login(BAD).expect(401);
    const denied = await a.login(BAD);
    expectTooManyRequests(denied);
    expect(denied.headers['retry-after']).toBe('900');

    const elsewhere = await b.login(GOOD);
    expectTooManyRequests(elsewhere);
    expect(elsewhere.headers['retry-after']).toBe('900');
    expectTooManyRequests(await a.login(GOOD));

    // Both block caches now hold the denial: deleting the keys in Redis by hand lifts nothing.
    const keys = await redis.client().keys('rl:*');
    expect(keys.sort()).toEqual([`rl:{${identityKeyPart(loginIdentityOf('paul'))}}:login:fw1m`, `rl:{ip:${CLIENT}}:login-ip:fw1h`].sort());
    await redis.client().del(...keys);
    for (const instance of [a, b]) expectTooManyRequests(await instance.login(GOOD));

    // RateLimitService.reset lifts it from one instance; the other's block cache drops it within 100 ms.
    await apps[1].get(RateLimitService).reset(loginIdentityOf('paul'), LOGIN_ACCOUNT_LIMIT);
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

  it('agree on the attack spread over both instances: 5 of paul\'s 40 guesses reach the password check', async () => {
    const service = apps[0].get(RateLimitService);
    let sent = 0;
    const { victim, own } = await guessWithOwnAccount(
      (credentials) => (sent++ % 2 ? a : b).login(credentials),
      (failures) => eventually(async () => expect((await service.peek(`ip:${CLIENT}`, LOGIN_IP_BUCKET)).remaining).toBe(20 - failures)),
    );
    expect(tally(victim)).toEqual({ '401': 5, '429 login': 15, '429 login-ip': 20 });
    expect(own).toEqual([...Array(4).fill('200'), ...Array(6).fill('429 login-ip')]);
    for (const instance of apps) expect(await accountStatus(instance, 'paul')).toMatchObject({ allowed: false });
    // the IP's cap holds on both; another address is not concerned
    for (const instance of [a, b]) expectTooManyRequests(await instance.login(FIONA));
    await b.login(FIONA, OTHER_CLIENT).expect(200);
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

/** Memory storage that fails on demand: the account counter's checks, resets, or everything. */
class FailingStorage extends MemoryStorage {
  failing: 'nothing' | 'account checks' | 'resets' | 'everything' = 'nothing';

  override check(checks: readonly RateLimitCheck[], cost: number) {
    const account = checks.some((check) => check.rule.name === LOGIN_BUCKET);
    if (this.failing === 'everything' || (this.failing === 'account checks' && account)) throw new Error('storage down');
    return super.check(checks, cost);
  }

  override reset(checks: readonly RateLimitCheck[]): void {
    if (this.failing === 'everything' || this.failing === 'resets') throw new Error('storage down');
    super.reset(checks);
  }
}

describe.each(HTTP_PLATFORMS)('sample app, POST /auth/login while the storage fails, on %s', (platform) => {
  let app: INestApplication;
  let storage: FailingStorage;
  const { login } = clientOf(() => app);

  beforeEach(async () => {
    storage = new FailingStorage({ clock: new FakeClock(START).now });
    app = await startSampleApp(platform, storage, new ReportGate());
  });

  afterEach(async () => {
    await app?.close();
  });

  it('a reset that fails does not turn a good password into an error: the login succeeds, the failures stay until their minute ends', async () => {
    for (let i = 0; i < 2; i++) await login(BAD).expect(401);
    storage.failing = 'resets';
    const ok = await login(GOOD).expect(200);
    expect(ok.body.token).toBe('paid-token');
    storage.failing = 'nothing';
    // 2 failures and the good attempt's unit: nothing was forgiven
    expect((await accountStatus(app, 'paul')).remaining).toBe(2);
  });

  it('refuses an attempt it cannot count on the account with a 503, as the route\'s onStorageError: \'deny\' does, before the password is checked', async () => {
    storage.failing = 'account checks';
    for (const credentials of [GOOD, BAD]) {
      const refused = await login(credentials).expect(503);
      expect(refused.headers['retry-after']).toBe('1');
      expect(refused.body).toEqual({ statusCode: 503, error: 'Service Unavailable', message: 'Rate limiting is temporarily unavailable', retryAfter: 1 });
    }
    storage.failing = 'nothing';
    await login(GOOD).expect(200);
    expect((await accountStatus(app, 'paul')).remaining).toBe(5);
  });

  it('answers 503 from the guard when the storage is down altogether', async () => {
    storage.failing = 'everything';
    const refused = await login(GOOD).expect(503);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(refused.body).toMatchObject({ statusCode: 503, error: 'Service Unavailable' });
  });
});
