import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import { AppModule } from '../../sample-app/app.module.js';
import { routeId } from '../../lib/rules/route-id.js';
import { expectTooManyRequests, FREE_USER, PAID_USER, remaining } from '../support/assertions.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, HTTP_PLATFORMS, storageKinds, type HttpAppOptions } from '../support/scenario-app.js';
import { exact } from '../support/exact.js';

const FREE = FREE_USER;
const PAID = PAID_USER;

let redis: TestRedis;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await redis?.stop();
});

describe.each(HTTP_PLATFORMS)('sample app on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', ({ name, create }) => {
    let app: INestApplication;
    let http: () => ReturnType<typeof request>;
    // 20 s into a minute: windows are aligned, and the clock only moves when a test says so.
    let clock: FakeClock;

    async function start(options: HttpAppOptions = {}): Promise<void> {
      const moduleRef = await Test.createTestingModule({ imports: [AppModule.register({ storage: create(clock), storagePolicy: exact({}) })] }).compile();
      app = await createHttpApp(moduleRef, { platform, ...options });
      http = () => request(app.getHttpServer());
    }

    beforeEach(async () => {
      await redis.flush();
      clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20));
      await start();
    });

    afterEach(async () => {
      await app?.close();
    });

    describe('GET /items (5/minute)', () => {
      it('lets 5 requests through, counting down, then answers 429', async () => {
        for (let i = 0; i < 5; i++) {
          const response = await http().get('/items').expect(200);
          expect(response.body).toEqual([{ item: 'Foo' }, { item: 'Bar' }]);
          expect(response.headers['ratelimit-policy']).toBe('"ItemsController.findAll";q=5;w=60');
          expect(remaining(response)).toBe(4 - i);
          expect(response.headers['ratelimit']).toMatch(/^"ItemsController\.findAll";r=\d+;t=\d+$/);
        }

        const denied = await http().get('/items');
        expectTooManyRequests(denied);
        expect(denied.headers['retry-after']).toBe('40'); // the window ends at :00, 40 s away
        expect(denied.headers['ratelimit-policy']).toBe('"ItemsController.findAll";q=5;w=60');
        expect(denied.headers['ratelimit']).toBe('"ItemsController.findAll";r=0;t=40');

        clock.advance(39_999);
        expectTooManyRequests(await http().get('/items'));
        clock.advance(1);
        expect(remaining(await http().get('/items').expect(200))).toBe(4);

        if (name === 'redis') {
          // The counter really lives in Redis, under the client IP's hash tag.
          const keys = await redis!.client().keys('rl:*');
          expect(keys).toEqual([expect.stringMatching(new RegExp(`^rl:\\{ip:[^}]+\\}:${routeId('ItemsController.findAll')}:fw1m$`))]);
        }
      });
    });

    describe('POST /create_item (1/second)', () => {
      it('echoes the item, then refuses an immediate second one for 1 second', async () => {
        const created = await http().post('/create_item').send({ name: 'Baz', price: 3 }).expect(201);
        expect(created.body).toEqual({ message: 'Item created', data: { name: 'Baz', price: 3 } });
        expect(created.headers['ratelimit-policy']).toBe('"ItemsController.create";q=1;w=1');
        expect(remaining(created)).toBe(0);

        const denied = await http().post('/create_item').send({ name: 'Qux' });
        expectTooManyRequests(denied);
        expect(denied.headers['retry-after']).toBe('1');
        expect(denied.body.retryAfter).toBe(1);

        clock.advance(1_000);
        await http().post('/create_item').send({ name: 'Qux' }).expect(201);
      });
    });

    describe('POST /auth/login (5 failed attempts/minute per account and IP; 20/hour per IP)', () => {
      // More (the attack it stops, a reset after a login, the 15-minute lockout, the per-IP cap,
      // outages): sample-app-control.e2e.spec.ts
      it('counts failed attempts per account: 5 reach the handler, the 6th is 429 even with good credentials; another account is not locked', async () => {
        const ok = await http().post('/auth/login').send({ username: 'paul', password: 'paid-password' }).expect(200);
        expect(ok.body).toEqual({ token: 'paid-token', tokenType: 'Bearer', user: { id: 'u-paid', name: 'Paul Paid', plan: 'paid' } });
        expect(ok.headers['ratelimit-policy']).toBe('"login-ip";q=20;w=3600');

        for (const password of ['guess-1', 'guess-2', 'guess-3', 'guess-4', 'guess-5']) {
          const failed = await http().post('/auth/login').send({ username: 'fiona', password }).expect(401);
          expect(failed.body).toMatchObject({ statusCode: 401, message: 'Invalid username or password' });
        }
        const denied = await http().post('/auth/login').send({ username: 'fiona', password: 'free-password' });
        expectTooManyRequests(denied);
        expect(denied.headers['retry-after']).toBe('900');
        expect(denied.headers['ratelimit-policy']).toBe('"login";q=5;w=60');

        // fiona's failures are hers: paul, from the same address, still logs in
        await http().post('/auth/login').send({ username: 'paul', password: 'paid-password' }).expect(200);
      });
    });

    describe('GET /quotes/:symbol (100/minute per IP, 1000/minute per paid user)', () => {
      it('returns a deterministic quote with the uppercased symbol', async () => {
        const first = await http().get('/quotes/aapl').expect(200);
        expect(first.body).toEqual({ symbol: 'AAPL', price: expect.any(Number), currency: 'USD' });
        expect(first.body.price).toBeGreaterThanOrEqual(10);
        expect(first.body.price).toBeLessThan(1000);
        const again = await http().get('/quotes/AAPL').expect(200);
        expect(again.body).toEqual(first.body);
        const other = await http().get('/quotes/MSFT').expect(200);
        expect(other.body.symbol).toBe('MSFT');
      });

      it('rejects a malformed symbol with 400', async () => {
        const response = await http().get('/quotes/bad!symbol').expect(400);
        expect(response.body).toMatchObject({ statusCode: 400, error: 'Bad Request' });
        await http().get('/quotes/ABCDEFGHIJK').expect(400); // 11 letters
        await http().get('/quotes/BRK1').expect(400);
      });

      it('gives paid users their own 1000/minute budget; free users share the IP budget', async () => {
        const anonymous = await http().get('/quotes/AAPL').expect(200);
        expect(anonymous.headers['ratelimit-policy']).toBe('"quotes";q=100;w=60');
        expect(remaining(anonymous)).toBe(99);

        const paid = await http().get('/quotes/AAPL').set(PAID).expect(200);
        expect(paid.headers['ratelimit-policy']).toBe('"quotes";q=1000;w=60');
        expect(remaining(paid)).toBe(999);
        expect(remaining(await http().get('/quotes/AAPL').set(PAID).expect(200))).toBe(998);

        // The paid requests did not touch the IP budget...
        expect(remaining(await http().get('/quotes/AAPL').expect(200))).toBe(98);

        // ...but a free token is just another request from this IP.
        const free = await http().get('/quotes/AAPL').set(FREE).expect(200);
        expect(free.headers['ratelimit-policy']).toBe('"quotes";q=100;w=60');
        expect(remaining(free)).toBe(97);

        // An unknown token is anonymous.
        expect(remaining(await http().get('/quotes/AAPL').set({ Authorization: 'Bearer nope' }).expect(200))).toBe(96);
      });

      it('refuses the 101st anonymous request in a minute, while a paid user still passes', async () => {
        const seen: number[] = [];
        for (let batch = 0; batch < 10; batch++) {
          const responses = await Promise.all(Array.from({ length: 10 }, () => http().get('/quotes/IBM')));
          for (const response of responses) {
            expect(response.status).toBe(200);
            seen.push(remaining(response));
          }
        }
        // Every request was counted exactly once, even when concurrent.
        expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i));

        const denied = await http().get('/quotes/IBM');
        expectTooManyRequests(denied);
        expect(denied.headers['ratelimit']).toMatch(/^"quotes";r=0;t=\d+$/);
        await http().get('/quotes/IBM').set(FREE).expect(429);

        const paid = await http().get('/quotes/IBM').set(PAID).expect(200);
        expect(remaining(paid)).toBe(999);
      });
    });

    describe('client IPs', () => {
      it('with trust proxy, each X-Forwarded-For client gets its own budget', async () => {
        await app.close();
        await start({ trustProxy: true });
        const from = (ip: string) => http().get('/items').set('X-Forwarded-For', ip);

        for (let i = 0; i < 5; i++) await from('203.0.113.1').expect(200);
        expectTooManyRequests(await from('203.0.113.1'));

        const other = await from('203.0.113.2').expect(200);
        expect(remaining(other)).toBe(4);
        // The left-most address is the client; the proxies after it do not matter.
        expectTooManyRequests(await from('203.0.113.1, 198.51.100.7'));
      });

      it('without trust proxy, X-Forwarded-For is ignored: one budget for the socket address', async () => {
        for (let i = 0; i < 5; i++) {
          const response = await http().get('/items').set('X-Forwarded-For', `203.0.113.${10 + i}`).expect(200);
          expect(remaining(response)).toBe(4 - i);
        }
        expectTooManyRequests(await http().get('/items').set('X-Forwarded-For', '203.0.113.99'));
        expectTooManyRequests(await http().get('/items'));
      });
    });

    describe('GET /user_data (10/minute per user, via an injected key resolver)', () => {
      it('keeps separate budgets per user and falls back to the IP for anonymous callers', async () => {
        for (let i = 0; i < 10; i++) {
          const response = await http().get('/user_data').set(PAID).expect(200);
          expect(response.body).toEqual({ message: 'Data for user u-paid' });
          expect(response.headers['ratelimit-policy']).toBe('"UserDataController.getUserData";q=10;w=60');
          expect(remaining(response)).toBe(9 - i);
        }
        expectTooManyRequests(await http().get('/user_data').set(PAID));

        const free = await http().get('/user_data').set(FREE).expect(200);
        expect(free.body).toEqual({ message: 'Data for user u-free' });
        expect(remaining(free)).toBe(9);

        const anonymous = await http().get('/user_data').expect(200);
        expect(anonymous.body).toEqual({ message: 'Data for anonymous user' });
        expect(remaining(anonymous)).toBe(9);
        // An unknown token is the same anonymous client: its IP.
        const unknown = await http().get('/user_data').set({ Authorization: 'Bearer nope' }).expect(200);
        expect(unknown.body).toEqual({ message: 'Data for anonymous user' });
        expect(remaining(unknown)).toBe(8);

        for (let i = 0; i < 9; i++) await http().get('/user_data').set(FREE).expect(200);
        expectTooManyRequests(await http().get('/user_data').set(FREE));
        // The IP budget is still untouched by either user.
        expect(remaining(await http().get('/user_data').expect(200))).toBe(7);
      });
    });

    describe('GET /health (@SkipRateLimit)', () => {
      it('always answers 200 without rate-limit headers', async () => {
        for (let i = 0; i < 20; i++) {
          const response = await http().get('/health').expect(200);
          // through terminus, with the limiter's storage (details in health.e2e.spec.ts)
          const ratelimit = { status: 'up', storage: name, latencyMs: expect.any(Number), circuit: 'closed' };
          expect(response.body).toEqual({ status: 'ok', info: { ratelimit }, error: {}, details: { ratelimit } });
          expect(response.headers['ratelimit']).toBeUndefined();
          expect(response.headers['ratelimit-policy']).toBeUndefined();
          expect(response.headers['retry-after']).toBeUndefined();
        }
      });
    });
  });
});
