import 'reflect-metadata';
import { jest } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import type { AddressInfo } from 'node:net';
import { AppModule } from '../../sample-app/app.module.js';
import { QuotesService } from '../../sample-app/quotes/quotes.service.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import { connectWs, type WsTestClient } from '../support/ws-client.js';
import { exact } from '../support/exact.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

const rateLimited = { event: 'exception', data: { status: 'error', code: 'RATE_LIMITED', message: 'Rate limit exceeded', retryAfter: 40 } };

describe.each(HTTP_PLATFORMS)("sample app's socket.io quotes on %s", (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', ({ create }) => {
    let app: INestApplication;
    let port: number;
    let clock: FakeClock;
    let client: WsTestClient | undefined;
    const quote = (symbol: string) => new QuotesService().getQuote(symbol);

    beforeEach(async () => {
      await redis.flush();
      clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20)); // 40 s before the minute's window ends
      const moduleRef = await Test.createTestingModule({ imports: [AppModule.register({ storage: create(clock), storagePolicy: exact({}) })] }).compile();
      app = await createHttpApp(moduleRef, { platform, forceCloseConnections: true }); // fetch's keep-alive must not hold close()
      await app.listen(0, '127.0.0.1');
      port = (app.getHttpServer().address() as AddressInfo).port;
    });

    afterEach(async () => {
      await client?.close();
      await app?.close();
    });

    it('answers `quote` with the quote, on the HTTP port, 10 a minute per client; the 11th gets the exception event', async () => {
      const getQuote = jest.spyOn(app.get(QuotesService), 'getQuote');
      client = await connectWs('socket.io', port);
      for (let i = 0; i < 10; i++) expect(await client.ask('quote', { symbol: 'acme' })).toEqual({ event: 'quote', data: quote('ACME') });
      expect(await client.ask('quote', { symbol: 'acme' })).toEqual(rateLimited);
      expect(getQuote).toHaveBeenCalledTimes(10);

      // HTTP on the same port keeps its own budget
      const http = await fetch(`http://127.0.0.1:${port}/quotes/ACME`);
      expect(http.status).toBe(200);
      expect(await http.json()).toEqual(quote('ACME'));

      // same connection, next window
      clock.advance(40_000);
      expect(await client.ask('quote', { symbol: 'XYZ' })).toEqual({ event: 'quote', data: quote('XYZ') });
      expect(client.open).toBe(true);
    });

    it('answers a bad symbol with an exception event, and counts it', async () => {
      client = await connectWs('socket.io', port);
      expect(await client.ask('quote', { symbol: 'A1' })).toEqual({
        event: 'exception',
        data: { status: 'error', message: 'symbol must be 1-10 letters, e.g. AAPL', cause: { pattern: 'quote', data: { symbol: 'A1' } } },
      });
      for (let i = 0; i < 9; i++) expect((await client.ask('quote', { symbol: 'ACME' })).event).toBe('quote');
      expect(await client.ask('quote', { symbol: 'ACME' })).toEqual(rateLimited);
    });
  });
});
