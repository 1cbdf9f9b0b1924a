import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { createClient, type Client } from 'graphql-ws';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { AppModule } from '../../sample-app/app.module.js';
import { PRICE_FEED_TIMING, type PriceFeedTiming } from '../../sample-app/quotes/price-feed.js';
import { QuotesService } from '../../sample-app/quotes/quotes.service.js';
import { exact } from '../support/exact.js';
import { FakeClock } from '../support/fake-clock.js';
import { answered, refused, type Seen } from '../support/graphql-ws-client.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import { until } from '../support/until.js';

/**
 * The sample app's `priceChanged(symbol)` subscription on /graphql over graphql-ws, with a real
 * graphql-ws client: the price feed of gRPC's WatchPrices, at most 2 open and 10 subscribe
 * operations a minute per client address.
 */

const PRICE_CHANGED = (symbol: string) => `subscription { priceChanged(symbol: "${symbol}") { symbol price currency } }`;
const quote = (symbol: string) => new QuotesService().getQuote(symbol);

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe.each(HTTP_PLATFORMS)('sample app priceChanged subscription on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', ({ create }) => {
    let app: INestApplication;
    let url: string;
    let timing: { -readonly [K in keyof PriceFeedTiming]: PriceFeedTiming[K] };
    const clients: Client[] = [];
    const connect = () => {
      const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true });
      clients.push(client);
      return client;
    };

    /**
     * Subscribes until admitted: a feed stopped by a closed socket gives its slot back one storage
     * call later, which another socket's subscribe may overtake. (On one socket, graphql-ws handles
     * an unsubscribe before the next subscribe, so the slot is back by then.)
     */
    async function admittedOnceFree(client: Client, symbol: string): Promise<Seen> {
      let seen: Seen | undefined;
      await until(async () => {
        seen = await answered(client, PRICE_CHANGED(symbol));
        return seen.events.length > 0;
      }, 'a free slot');
      return seen!;
    }

    beforeEach(async () => {
      await redis.flush();
      // 20 s into a minute: the subscribe limit's window ends 40 s later
      const clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20));
      timing = { tickMs: 20, lifetimeMs: 60_000 }; // read when a feed opens: a test may shorten the lifetime
      const moduleRef = await Test.createTestingModule({ imports: [AppModule.register({ storage: create(clock), storagePolicy: exact({}) })] })
        .overrideProvider(PRICE_FEED_TIMING)
        .useValue(timing)
        .compile();
      app = await createHttpApp(moduleRef, { platform, forceCloseConnections: true });
      await app.listen(0, '127.0.0.1');
      url = `ws://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}/graphql`;
    });
    afterEach(async () => {
      for (const client of clients.splice(0)) await client.dispose();
      await app?.close();
    });

    it('streams the symbol\'s price, starting from its quote', async () => {
      const feed = await answered(connect(), PRICE_CHANGED('acme'));
      expect(feed.events[0]).toEqual({ priceChanged: quote('ACME') });
      await until(() => feed.events.length >= 3, 'two more prices');
      const prices = feed.events.map((event) => (event as { priceChanged: { price: number } }).priceChanged.price);
      expect(new Set(prices).size).toBeGreaterThan(1);
      for (const price of prices) expect(Math.abs(price - quote('ACME').price)).toBeLessThanOrEqual(quote('ACME').price * 0.011);
    });

    it('a bad symbol is an error, and opens no feed', async () => {
      const client = connect();
      const bad = await answered(client, PRICE_CHANGED('not a symbol'));
      expect(bad.events).toEqual([]);
      expect(bad.errors[0].message).toContain('symbol must be 1-10 letters');
      // it held no slot: two feeds still open
      for (const symbol of ['A', 'B']) expect((await answered(client, PRICE_CHANGED(symbol))).events[0]).toEqual({ priceChanged: quote(symbol) });
    });

    it('at most 2 open per client address: the third is RATE_LIMITED, even on another socket; unsubscribing one frees its slot', async () => {
      const one = connect();
      const first = await answered(one, PRICE_CHANGED('AAPL'));
      await answered(connect(), PRICE_CHANGED('IBM'));
      const other = connect();
      const third = await answered(other, PRICE_CHANGED('MSFT'));
      expect(refused(third)).toEqual(['RATE_LIMITED']);
      expect(third.errors[0].extensions?.retryAfter).toEqual(expect.any(Number));
      first.unsubscribe();
      expect((await answered(one, PRICE_CHANGED('MSFT'))).events[0]).toEqual({ priceChanged: quote('MSFT') });
      expect(refused(await answered(other, PRICE_CHANGED('ORCL')))).toEqual(['RATE_LIMITED']);
    });

    it('closing the socket frees both of its feeds', async () => {
      const client = connect();
      await answered(client, PRICE_CHANGED('AAPL'));
      await answered(client, PRICE_CHANGED('IBM'));
      await client.dispose();
      const next = connect();
      await admittedOnceFree(next, 'MSFT');
      await admittedOnceFree(next, 'ORCL');
    });

    it('a feed that ends by itself (its lifetime) completes and frees its slot', async () => {
      timing.lifetimeMs = 60;
      const client = connect();
      const short = await answered(client, PRICE_CHANGED('AAPL'));
      await until(() => short.completed, 'the feed to end by itself');
      timing.lifetimeMs = 60_000;
      await answered(client, PRICE_CHANGED('IBM'));
      expect((await answered(client, PRICE_CHANGED('MSFT'))).events[0]).toEqual({ priceChanged: quote('MSFT') }); // the ended feed's slot
      expect(refused(await answered(client, PRICE_CHANGED('ORCL')))).toEqual(['RATE_LIMITED']);
    });

    it('10 subscribe operations a minute per client address: the 11th is RATE_LIMITED with retryAfter', async () => {
      const client = connect();
      for (let i = 0; i < 10; i++) {
        const feed = await answered(client, PRICE_CHANGED('AAPL'));
        expect(feed.events[0]).toEqual({ priceChanged: quote('AAPL') });
        feed.unsubscribe();
      }
      const eleventh = await answered(client, PRICE_CHANGED('AAPL'));
      expect(refused(eleventh)).toEqual(['RATE_LIMITED']);
      expect(eleventh.errors[0].extensions?.retryAfter).toBe(40);
    });
  });
});
