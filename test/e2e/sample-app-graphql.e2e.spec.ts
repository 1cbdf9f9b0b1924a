import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import { AppModule } from '../../sample-app/app.module.js';
import { expectTooManyRequests, FREE_USER, PAID_USER, remaining } from '../support/assertions.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import { exact } from '../support/exact.js';

/**
 * The sample app's GraphQL `quote` query: limited like `GET /quotes/:symbol`, and on the same
 * budget, since both name the bucket `quotes`.
 */

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

/** `{ q0: quote(symbol: "IBM") { symbol } q1: ... }`: `count` checks in one operation. */
function quotes(count: number): string {
  return `{ ${Array.from({ length: count }, (_, i) => `q${i}: quote(symbol: "IBM") { symbol }`).join(' ')} }`;
}

describe.each(HTTP_PLATFORMS)('sample app GraphQL on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', ({ name, create }) => {
    let app: INestApplication;
    let http: () => ReturnType<typeof request>;
    const graphql = (query: string, headers: Record<string, string> = {}) => http().post('/graphql').set(headers).send({ query });

    beforeEach(async () => {
      await redis.flush();
      // 20 s into a minute: the window ends 40 s later
      const clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20));
      const moduleRef = await Test.createTestingModule({ imports: [AppModule.register({ storage: create(clock), storagePolicy: exact({}) })] }).compile();
      app = await createHttpApp(moduleRef, { platform });
      http = () => request(app.getHttpServer());
    });
    afterEach(async () => {
      await app?.close();
    });

    it('answers the quote GET /quotes/:symbol answers, with the headers of the shared bucket', async () => {
      const rest = await http().get('/quotes/aapl').expect(200);
      const response = await graphql('{ quote(symbol: "aapl") { symbol price currency } }').expect(200);
      expect(response.body).toEqual({ data: { quote: rest.body } });
      expect(rest.body.symbol).toBe('AAPL');
      expect(response.headers['ratelimit-policy']).toBe('"quotes";q=100;w=60');
      expect(response.headers['ratelimit']).toBe('"quotes";r=98;t=40'); // the GET took one
    });

    it('shares one budget with GET /quotes/:symbol: 100 a minute whichever way they come', async () => {
      expect(remaining(await http().get('/quotes/IBM').expect(200))).toBe(99);
      const two = await graphql(quotes(2)).expect(200);
      expect(two.body.errors).toBeUndefined();
      expect(two.headers['ratelimit']).toBe('"quotes";r=97;t=40');
      expect(remaining(await http().get('/quotes/IBM').set(FREE_USER).expect(200))).toBe(96); // a free token is the IP

      const rest = await graphql(quotes(96)).expect(200);
      expect(rest.body.errors).toBeUndefined();
      expect(Object.values(rest.body.data)).toEqual(Array(96).fill({ symbol: 'IBM' }));
      expect(rest.headers['ratelimit']).toBe('"quotes";r=0;t=40');

      // spent: both ways are refused
      expectTooManyRequests(await http().get('/quotes/IBM'));
      const denied = await graphql('{ q: quote(symbol: "IBM") { symbol } }').expect(200);
      expect(denied.body).toEqual({
        data: { q: null },
        errors: [{ message: 'Rate limit exceeded', locations: [{ line: 1, column: 3 }], path: ['q'], extensions: { code: 'RATE_LIMITED', retryAfter: 40 } }],
      });
      expect(denied.headers['retry-after']).toBe('40');
      expect(denied.headers['ratelimit']).toBe('"quotes";r=0;t=40');

      if (name === 'redis') {
        // one counter for both routes, under the client IP
        expect(await redis.client().keys('rl:*')).toEqual([expect.stringMatching(/^rl:\{ip:[^}]+\}:quotes:fw1m$/)]);
      }
    });

    it('gives a paid user their own 1000/minute, shared by both routes too', async () => {
      const viaGet = await http().get('/quotes/IBM').set(PAID_USER).expect(200);
      expect(viaGet.headers['ratelimit-policy']).toBe('"quotes";q=1000;w=60');
      expect(remaining(viaGet)).toBe(999);
      const viaGraphQL = await graphql(quotes(3), PAID_USER).expect(200);
      expect(viaGraphQL.headers['ratelimit-policy']).toBe('"quotes";q=1000;w=60');
      expect(viaGraphQL.headers['ratelimit']).toBe('"quotes";r=996;t=40');
      // the IP budget is untouched
      expect(remaining(await http().get('/quotes/IBM').expect(200))).toBe(99);
    });

    it('validates the symbol as GET does: BAD_REQUEST for that field', async () => {
      const response = await graphql('{ quote(symbol: "bad!") { symbol } }').expect(200);
      expect(response.body.data).toEqual({ quote: null });
      expect(response.body.errors).toHaveLength(1);
      expect(response.body.errors[0]).toMatchObject({ message: 'symbol must be 1-10 letters, e.g. AAPL', path: ['quote'], extensions: { code: 'BAD_REQUEST' } });
    });
  });
});
