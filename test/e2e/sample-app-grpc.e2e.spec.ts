/**
 * The sample app's gRPC server (sample-app/proto/quotes.proto), connected to the HTTP app as
 * main.ts connects it (`quotesGrpcOptions`, `inheritAppConfig: true`), with a real `@grpc/grpc-js`
 * client: `GetQuote` draws on the budget of `GET /quotes/:symbol`, one client address one budget;
 * `WatchPrices` streams prices, at most 2 open per client address.
 */
import 'reflect-metadata';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { jest } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import type { MicroserviceOptions } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { AppModule } from '../../sample-app/app.module.js';
import { quotesGrpcOptions, quotesProtoPath } from '../../sample-app/quotes/quotes-grpc.options.js';
import { PRICE_FEED_LEASE_MS, PRICE_FEED_TIMING, type PriceFeedTiming } from '../../sample-app/quotes/price-feed.js';
import { QuotesGrpcController } from '../../sample-app/quotes/quotes.grpc-controller.js';
import { QuotesService, type Quote } from '../../sample-app/quotes/quotes.service.js';
import { expectTooManyRequests, PAID_USER, remaining } from '../support/assertions.js';
import { ROOT } from '../support/compiled-library.js';
import { exact } from '../support/exact.js';
import { FakeClock } from '../support/fake-clock.js';
import { onFreePort, startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import { until } from '../support/until.js';

type QuotesClient = grpc.Client & Record<string, any>;
type Outcome<T> = { ok: true; value: T } | { ok: false; error: grpc.ServiceError };

const quote = (symbol: string) => new QuotesService().getQuote(symbol);

function loadClient(port: number): QuotesClient {
  const definition = protoLoader.loadSync(quotesProtoPath(), { keepCase: true, defaults: true });
  const { quotes } = grpc.loadPackageDefinition(definition) as any;
  return new quotes.Quotes(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

function getQuote(client: QuotesClient, symbol: string, metadata = new grpc.Metadata()): Promise<Outcome<Quote>> {
  return new Promise((resolve) =>
    client.GetQuote({ symbol }, metadata, (error: grpc.ServiceError | null, value: Quote) => resolve(error ? { ok: false, error } : { ok: true, value })),
  );
}

interface Watch {
  readonly call: grpc.ClientReadableStream<Quote>;
  /** Every quote received so far. */
  readonly quotes: Quote[];
  /** How the stream ended: with OK (its own end), or an error status (a refusal, or CANCELLED). */
  readonly ended: Promise<Outcome<Quote[]>>;
}

/** Opens `WatchPrices`: settles once admitted (its first quote arrived) or ended (refused). */
async function watch(client: QuotesClient, symbol: string, open: Watch[]): Promise<Watch & { admitted: boolean }> {
  const call: grpc.ClientReadableStream<Quote> = client.WatchPrices({ symbol });
  const quotes: Quote[] = [];
  call.on('data', (value: Quote) => quotes.push(value));
  const ended = new Promise<Outcome<Quote[]>>((resolve) => {
    call.on('error', (error: grpc.ServiceError) => resolve({ ok: false, error }));
    call.on('end', () => resolve({ ok: true, value: quotes }));
  });
  const stream = { call, quotes, ended };
  open.push(stream);
  const admitted = await Promise.race([new Promise<boolean>((resolve) => call.once('data', () => resolve(true))), ended.then(() => false)]);
  return { ...stream, admitted };
}

/** Opens streams until one is admitted: a cancelled or ended stream's slot comes back one storage call after its teardown. */
async function watchOnceFree(client: QuotesClient, symbol: string, open: Watch[]): Promise<Watch> {
  let admitted: (Watch & { admitted: boolean }) | undefined;
  await until(async () => {
    admitted = await watch(client, symbol, open);
    return admitted.admitted;
  }, 'a WatchPrices stream admitted once a slot was given back');
  return admitted!;
}

const failure = (outcome: Outcome<unknown>) => (outcome.ok ? undefined : outcome.error);

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe.each(HTTP_PLATFORMS)('sample app gRPC beside %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', ({ name, create }) => {
    let app: INestApplication;
    let http: () => ReturnType<typeof request>;
    let client: QuotesClient;
    let grpcPort: number;
    let timing: { -readonly [K in keyof PriceFeedTiming]: PriceFeedTiming[K] };
    const clients: QuotesClient[] = [];
    const open: Watch[] = [];

    beforeEach(async () => {
      await redis.flush();
      // 20 s into a minute: the quotes' window ends 40 s later
      const clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20));
      // a price every 20 ms; read when a stream opens, so a test may shorten the lifetime
      timing = { tickMs: 20, lifetimeMs: 60_000 };
      app = await onFreePort(async (port) => {
        const moduleRef = await Test.createTestingModule({ imports: [AppModule.register({ storage: create(clock), storagePolicy: exact({}) })] })
          .overrideProvider(PRICE_FEED_TIMING)
          .useValue(timing)
          .compile();
        const created = await createHttpApp(moduleRef, {
          platform,
          forceCloseConnections: true,
          // as main.ts connects it, on loopback
          beforeInit: (built) => void built.connectMicroservice<MicroserviceOptions>(quotesGrpcOptions(port, '127.0.0.1'), { inheritAppConfig: true }),
        });
        try {
          await created.startAllMicroservices();
        } catch (error) {
          await created.close(); // a port taken since freePort found it: onFreePort tries another
          throw error;
        }
        grpcPort = port;
        return created;
      });
      await app.listen(0, '127.0.0.1');
      const httpUrl = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
      http = () => request(httpUrl);
      client = newClient();
    });
    afterEach(async () => {
      for (const { call } of open.splice(0)) call.cancel();
      for (const each of clients.splice(0)) each.close();
      await app?.close();
    });

    function newClient(): QuotesClient {
      const created = loadClient(grpcPort);
      clients.push(created);
      return created;
    }

    it('GetQuote answers the quote GET /quotes/:symbol answers, and counts in the quota GET /rate_limit shows', async () => {
      const rest = await http().get('/quotes/acme').expect(200);
      expect(await getQuote(client, 'acme')).toEqual({ ok: true, value: rest.body });
      expect(rest.body).toEqual(quote('ACME'));
      const quota = await http().get('/rate_limit').expect(200);
      expect(quota.body.resources.quotes).toMatchObject({ limit: 100, remaining: 98 }); // the GET and the call
    });

    it('GetQuote and GET /quotes/:symbol share one 100/minute per client address: the 101st is refused either way', async () => {
      const getQuoteRuns = jest.spyOn(app.get(QuotesService), 'getQuote');
      for (let i = 0; i < 98; i++) await http().get('/quotes/IBM').expect(200);
      expect(remaining(await http().get('/quotes/IBM').expect(200))).toBe(1);
      expect((await getQuote(client, 'IBM')).ok).toBe(true); // the 100th: counted once, though the guard is global too

      const refused = failure(await getQuote(client, 'IBM'));
      expect(refused?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(refused?.details).toBe('Rate limit exceeded (policy "quotes")');
      expect(refused?.metadata.get('retry-after')).toEqual(['40']);
      // a second connection from the same address is the same client
      expect(failure(await getQuote(newClient(), 'IBM'))?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      const overHttp = await http().get('/quotes/IBM');
      expectTooManyRequests(overHttp);
      expect(overHttp.headers['retry-after']).toBe('40');
      expect(getQuoteRuns).toHaveBeenCalledTimes(100); // no refused call reached its handler

      if (name === 'redis') {
        // one counter for both ways, under the client address
        expect(await redis.client().keys('rl:*')).toEqual(['rl:{ip:127.0.0.1}:quotes:fw1m']);
      }
    });

    it("a bearer token in a call's metadata buys no paid plan: gRPC callers count under their address", async () => {
      const paid = new grpc.Metadata();
      paid.set('authorization', PAID_USER.Authorization);
      expect((await getQuote(client, 'IBM', paid)).ok).toBe(true);
      expect(remaining(await http().get('/quotes/IBM').expect(200))).toBe(98); // the address's budget paid for the call
      const paidOverHttp = await http().get('/quotes/IBM').set(PAID_USER).expect(200);
      expect(paidOverHttp.headers['ratelimit-policy']).toBe('"quotes";q=1000;w=60');
      expect(remaining(paidOverHttp)).toBe(999); // the user's own budget was not
    });

    it('a bad symbol ends the call with INVALID_ARGUMENT, after it was counted, as on HTTP', async () => {
      for (const symbol of ['A1', '', 'ABCDEFGHIJK']) {
        const refused = failure(await getQuote(client, symbol));
        expect({ code: refused?.code, details: refused?.details }).toEqual({ code: grpc.status.INVALID_ARGUMENT, details: 'symbol must be 1-10 letters, e.g. AAPL' });
      }
      expect(remaining(await http().get('/quotes/IBM').expect(200))).toBe(96);

      const badWatch = await watch(client, 'A1', open);
      expect(badWatch.admitted).toBe(false);
      expect(failure(await badWatch.ended)).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'symbol must be 1-10 letters, e.g. AAPL' });
      // it gave its slot back: two streams still fit
      await watchOnceFree(client, 'ACME', open);
      await watchOnceFree(client, 'ACME', open);
    });

    it('WatchPrices streams the quote, then prices moving within 1% of it, until the client cancels; it costs no quotes', async () => {
      const acme = quote('ACME');
      const stream = await watch(client, 'acme', open);
      expect(stream.admitted).toBe(true);
      await until(() => stream.quotes.length >= 4, 'four quotes');
      expect(stream.quotes[0]).toEqual(acme);
      for (const each of stream.quotes) {
        expect(each).toMatchObject({ symbol: 'ACME', currency: 'USD' });
        expect(Math.abs(each.price - acme.price)).toBeLessThanOrEqual(acme.price * 0.01 + 0.005);
      }
      expect(new Set(stream.quotes.map((each) => each.price)).size).toBeGreaterThan(1);

      stream.call.cancel();
      expect(failure(await stream.ended)?.code).toBe(grpc.status.CANCELLED);
      expect(remaining(await http().get('/quotes/IBM').expect(200))).toBe(99);
    });

    it('WatchPrices: a third stream from one address is refused while two are open; once one is cancelled, a new one is admitted', async () => {
      const a = await watch(client, 'ACME', open);
      const b = await watch(client, 'IBM', open);
      expect([a.admitted, b.admitted]).toEqual([true, true]);

      // from another connection, the same address: the same two slots
      const other = newClient();
      const third = await watch(other, 'MSFT', open);
      expect(third.admitted).toBe(false);
      const refused = failure(await third.ended);
      expect(refused?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(refused?.details).toBe('Rate limit exceeded (policy "QuotesGrpcController.watchPrices")');
      expect(refused?.metadata.get('retry-after')).toEqual(['1']);
      expect(third.quotes).toEqual([]);
      // the two open ones go on streaming
      const [aSeen, bSeen] = [a.quotes.length, b.quotes.length];
      await until(() => a.quotes.length > aSeen && b.quotes.length > bSeen, 'both open streams to send more');

      a.call.cancel();
      const d = await watchOnceFree(other, 'MSFT', open);
      expect(d.quotes[0]).toEqual(quote('MSFT'));
      // two open again: b and d
      expect((await watch(client, 'ORCL', open)).admitted).toBe(false);
    });

    it('WatchPrices ends by itself, with OK, after its lifetime, and gives its slot back', async () => {
      timing.lifetimeMs = 100;
      const a = await watch(client, 'ACME', open);
      const b = await watch(client, 'ACME', open);
      expect([a.admitted, b.admitted]).toEqual([true, true]);
      const [aEnd, bEnd] = await Promise.all([a.ended, b.ended]);
      expect(aEnd.ok && bEnd.ok).toBe(true);
      expect(a.quotes.length).toBeGreaterThanOrEqual(2); // at 0, 20, 40... ms, up to 100 ms
      expect(a.quotes.length).toBeLessThanOrEqual(6);

      timing.lifetimeMs = 60_000;
      await watchOnceFree(client, 'ACME', open);
      await watchOnceFree(client, 'ACME', open);
    });
  });
});

describe("the sample app's gRPC wiring", () => {
  const proto = join(ROOT, 'sample-app', 'proto', 'quotes.proto');

  it('finds quotes.proto from the sources and from a build, which tsc gives no .proto', () => {
    expect(quotesProtoPath()).toBe(proto);
    expect(quotesProtoPath(pathToFileURL(join(ROOT, 'dist', 'app', 'sample-app', 'quotes', 'quotes-grpc.options.js')))).toBe(proto);
    expect(quotesProtoPath(pathToFileURL(join(ROOT, '.test-build', 'run-1', 'sample-app', 'quotes', 'quotes-grpc.options.js')))).toBe(proto);
    expect(() => quotesProtoPath(pathToFileURL('/nowhere/sample-app/quotes/quotes-grpc.options.js'))).toThrow('sample-app/proto/quotes.proto not found');
  });

  it('serves on every interface by default, on the port it is given', () => {
    expect(quotesGrpcOptions(50051).options).toMatchObject({ package: 'quotes', protoPath: proto, url: '0.0.0.0:50051' });
  });

  it('refuses a WatchPrices lifetime its lease would not cover', () => {
    expect(() => new QuotesGrpcController(new QuotesService(), { tickMs: 1_000, lifetimeMs: PRICE_FEED_LEASE_MS })).toThrow('must be below its lease');
    expect(() => new QuotesGrpcController(new QuotesService(), { tickMs: 1_000, lifetimeMs: PRICE_FEED_LEASE_MS - 1 })).not.toThrow();
  });
});
