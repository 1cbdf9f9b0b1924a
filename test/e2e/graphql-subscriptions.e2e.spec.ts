import 'reflect-metadata';
import { type ExecutionContext, type INestApplication } from '@nestjs/common';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { Args, GqlExecutionContext, GraphQLModule, Int, Query, Resolver, Subscription } from '@nestjs/graphql';
import { Test } from '@nestjs/testing';
import { createClient, type Client } from 'graphql-ws';
import request from 'supertest';
import WebSocket from 'ws';
import { ConcurrencyLimit, RateLimit, RateLimitModule, UserKeyResolver, type RateLimitModuleOptions } from '../../lib/index.js';
import { exact } from '../support/exact.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';
import { answered, refused, subscribe } from '../support/graphql-ws-client.js';
import { answeringLate } from '../support/late-storage.js';
import { until } from '../support/until.js';

/**
 * GraphQL subscriptions over graphql-ws, with a real graphql-ws client on a real socket:
 * `@RateLimit` limits how often a client subscribes, on the budget its queries draw on;
 * `@ConcurrencyLimit` how many subscriptions it holds open, each slot back when the server
 * completes the stream, the client unsubscribes, or the socket closes.
 */

/** An event stream the test drives: it pushes events, ends it, and sees when its reader stopped it. */
class Channel implements AsyncIterableIterator<number> {
  private readonly queue: number[] = [];
  private waiting?: (result: IteratorResult<number>) => void;
  ended = false;
  /** Set when its reader called `return()`: graphql-ws does on unsubscribe and on close. */
  returned = false;

  push(value: number): void {
    if (this.waiting === undefined) return void this.queue.push(value);
    const resolve = this.waiting;
    this.waiting = undefined;
    resolve({ value, done: false });
  }

  /** The server completes the stream. */
  end(): void {
    this.ended = true;
    this.waiting?.({ value: undefined, done: true });
    this.waiting = undefined;
  }

  next(): Promise<IteratorResult<number>> {
    if (this.queue.length > 0) return Promise.resolve({ value: this.queue.shift()!, done: false });
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.waiting = resolve));
  }

  return(): Promise<IteratorResult<number>> {
    this.returned = true;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<number> {
    return this;
  }
}

/** The streams the resolvers handed out, in order, and how many subscribe resolvers ran. */
const channels: Channel[] = [];
let ran = 0;

function open(first?: number): Channel {
  ran++;
  const channel = new Channel();
  if (first !== undefined) channel.push(first);
  channels.push(channel);
  return channel;
}

/** A stand-in for authentication at connection time: the `user` param is the user's id. */
function signIn(extra: { request: { user?: object } }, params: Readonly<Record<string, unknown>> | undefined): void {
  if (typeof params?.user === 'string') extra.request.user = { id: params.user };
}

/** The API key a client sends in graphql-ws's connection params, read the Nest way. */
const apiKeyOf = (context: ExecutionContext) => {
  const { req } = GqlExecutionContext.create(context).getContext<{ req: { connectionParams?: { apiKey?: string } } }>();
  return req.connectionParams?.apiKey;
};

@Resolver()
class FeedResolver {
  /** The same bucket as `ticks`: queries over HTTP and subscribe operations share one budget. */
  @Query(() => Int, { nullable: true })
  @RateLimit('3/minute', { bucket: 'feed' })
  price(): number {
    return 42;
  }

  @Subscription(() => Int, { nullable: true, resolve: (event: number) => event })
  @RateLimit('3/minute', { bucket: 'feed' })
  ticks() {
    return open(1);
  }

  @Subscription(() => Int, { nullable: true, resolve: (event: number) => event })
  @ConcurrencyLimit(2, { leaseMs: 60 * 60_000 })
  held(@Args('id') id: string) {
    return open(id.length);
  }

  /** With a `filter`, the Apollo driver wraps the stream in an iterator of its own. */
  @Subscription(() => Int, { nullable: true, resolve: (event: number) => event, filter: (event: number) => event % 2 === 1 })
  @ConcurrencyLimit(1, { leaseMs: 60 * 60_000 })
  filtered() {
    return open(1);
  }

  @Subscription(() => Int, { nullable: true, resolve: (event: number) => event })
  @RateLimit('2/minute', { key: new UserKeyResolver() })
  mine() {
    return open(8);
  }

  @Subscription(() => Int, { nullable: true, resolve: (event: number) => event })
  @RateLimit('2/minute', { key: apiKeyOf })
  keyed() {
    return open(7);
  }
}

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe.each(HTTP_PLATFORMS)('GraphQL subscriptions over graphql-ws on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', (target: StorageTarget) => {
    let app: INestApplication;
    let url: string;
    /** How late the storage answers a slot: a test sets it to leave a client time to hang up. */
    let lateMs = 0;
    const clients: Client[] = [];
    const connect = (connectionParams?: Record<string, unknown>) => {
      const client = createClient({ url, webSocketImpl: WebSocket, connectionParams, retryAttempts: 0, lazy: true });
      clients.push(client);
      return client;
    };

    beforeEach(async () => {
      await redis.flush();
      channels.length = 0;
      ran = 0;
      const clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20)); // 40 s before the minute ends
      lateMs = 0;
      const options: RateLimitModuleOptions = { storage: answeringLate(target.create(clock), () => lateMs) };
      const moduleRef = await Test.createTestingModule({
        imports: [
          RateLimitModule.forRoot(exact(options)),
          GraphQLModule.forRoot<ApolloDriverConfig>({
            driver: ApolloDriver,
            autoSchemaFile: true,
            // who the connection is, found once, where UserKeyResolver reads it: the upgrade request's `user`
            subscriptions: { 'graphql-ws': { onConnect: (ctx) => void signIn(ctx.extra as { request: { user?: object } }, ctx.connectionParams) } },
          }),
        ],
        providers: [FeedResolver],
      }).compile();
      app = await createHttpApp(moduleRef, { platform });
      await app.listen(0, '127.0.0.1');
      url = (await app.getUrl()).replace(/^http/, 'ws').replace('[::1]', '127.0.0.1') + '/graphql';
    });
    afterEach(async () => {
      for (const client of clients.splice(0)) await client.dispose();
      await app?.close();
    });

    it('@RateLimit: a client subscribes 3 times a minute; the 4th is a RATE_LIMITED error with retryAfter, and its resolver does not run', async () => {
      const client = connect();
      for (let i = 0; i < 3; i++) expect((await answered(client, 'subscription { ticks }')).events).toEqual([{ ticks: 1 }]);
      const fourth = await answered(client, 'subscription { ticks }');
      expect(fourth.events).toEqual([]);
      expect(fourth.errors).toEqual([
        expect.objectContaining({ message: expect.stringContaining('Rate limit exceeded'), extensions: expect.objectContaining({ code: 'RATE_LIMITED', retryAfter: 40 }) }),
      ]);
      expect(ran).toBe(3);
    });

    it('@RateLimit: subscribe operations and HTTP queries of the same client draw on one budget', async () => {
      const http = request(app.getHttpServer());
      for (let i = 0; i < 2; i++) {
        const response = await http.post('/graphql').send({ query: '{ price }' }).expect(200);
        expect(response.body).toEqual({ data: { price: 42 } });
      }
      const client = connect();
      expect((await answered(client, 'subscription { ticks }')).events).toEqual([{ ticks: 1 }]);
      expect(refused(await answered(client, 'subscription { ticks }'))).toEqual(['RATE_LIMITED']);
      const query = await request(app.getHttpServer()).post('/graphql').send({ query: '{ price }' }).expect(200);
      expect(query.body.errors[0].extensions).toEqual(expect.objectContaining({ code: 'RATE_LIMITED' }));
      expect(ran).toBe(1);
    });

    it('a query sent over the socket counts under the same identity, on the same budget', async () => {
      await request(app.getHttpServer()).post('/graphql').send({ query: '{ price }' }).expect(200);
      const client = connect();
      expect((await answered(client, '{ price }')).events).toEqual([{ price: 42 }]);
      expect((await answered(client, 'subscription { ticks }')).events).toEqual([{ ticks: 1 }]);
      const fourth = await answered(client, '{ price }');
      expect(fourth.events).toEqual([{ price: null }]);
      expect(refused(fourth)).toEqual(['RATE_LIMITED']);
    });

    it.each([
      ['UserKeyResolver keys by the user onConnect put on the upgrade request', 'user', 'mine', 8],
      ['a key read from the connection params', 'apiKey', 'keyed', 7],
    ])('%s: two clients of one address count apart', async (_title, param, field, event) => {
      const alice = connect({ [param]: 'alice' });
      const bob = connect({ [param]: 'bob' });
      const query = `subscription { ${field} }`;
      for (let i = 0; i < 2; i++) expect((await answered(alice, query)).events).toEqual([{ [field]: event }]);
      expect(refused(await answered(alice, query))).toEqual(['RATE_LIMITED']);
      expect((await answered(bob, query)).events).toEqual([{ [field]: event }]);
    });

    it('@ConcurrencyLimit(2): a third open subscription is refused; events still flow to the two held', async () => {
      const client = connect();
      const first = await answered(client, 'subscription { held(id: "a") }');
      const second = await answered(client, 'subscription { held(id: "bb") }');
      expect([first.events, second.events]).toEqual([[{ held: 1 }], [{ held: 2 }]]);
      const third = await answered(client, 'subscription { held(id: "ccc") }');
      expect(refused(third)).toEqual(['RATE_LIMITED']);
      expect(third.errors[0].extensions?.retryAfter).toEqual(expect.any(Number));
      expect(ran).toBe(2);
      channels[0].push(10);
      await until(() => first.events.length === 2, 'the second event');
      expect(first.events[1]).toEqual({ held: 10 });
    });

    it('@ConcurrencyLimit(2): the slot comes back when the client unsubscribes', async () => {
      const client = connect();
      const first = await answered(client, 'subscription { held(id: "a") }');
      await answered(client, 'subscription { held(id: "b") }');
      expect(refused(await answered(client, 'subscription { held(id: "c") }'))).toEqual(['RATE_LIMITED']);
      first.unsubscribe();
      await until(() => channels[0].returned, 'the server to stop the first stream');
      expect((await answered(client, 'subscription { held(id: "d") }')).events).toEqual([{ held: 1 }]);
      expect(refused(await answered(client, 'subscription { held(id: "e") }'))).toEqual(['RATE_LIMITED']);
    });

    it("@ConcurrencyLimit(1) on a filtered subscription: held while open, back when the client unsubscribes", async () => {
      const client = connect();
      const first = await answered(client, 'subscription { filtered }');
      channels[0].push(2); // filtered out
      channels[0].push(3);
      await until(() => first.events.length === 2, 'the next odd event');
      expect(first.events).toEqual([{ filtered: 1 }, { filtered: 3 }]);
      expect(refused(await answered(client, 'subscription { filtered }'))).toEqual(['RATE_LIMITED']);
      first.unsubscribe();
      await until(() => channels[0].returned, 'the server to stop the first stream');
      expect((await answered(client, 'subscription { filtered }')).events).toEqual([{ filtered: 1 }]);
    });

    it('@ConcurrencyLimit(2): a client that hangs up while its slot is being decided gets no resolver run, and holds no slot', async () => {
      lateMs = 100;
      const gone = connect();
      const attempt = subscribe(gone, 'subscription { held(id: "gone") }');
      await new Promise((resolve) => setTimeout(resolve, 20)); // its subscribe is in, its slot not yet answered
      await gone.dispose();
      await new Promise((resolve) => setTimeout(resolve, 150)); // the slot's answer came, to a closed socket
      lateMs = 0;
      expect(attempt.events).toEqual([]);
      expect(ran).toBe(0);
      const client = connect();
      for (const id of ['a', 'b']) expect((await answered(client, `subscription { held(id: "${id}") }`)).events).toEqual([{ held: 1 }]);
      expect(refused(await answered(client, 'subscription { held(id: "c") }'))).toEqual(['RATE_LIMITED']);
      expect(ran).toBe(2);
    });

    it('@ConcurrencyLimit(2): the slot comes back when the server completes the stream', async () => {
      const client = connect();
      const first = await answered(client, 'subscription { held(id: "a") }');
      await answered(client, 'subscription { held(id: "b") }');
      channels[0].end();
      await until(() => first.completed, 'the client to see the stream complete');
      expect((await answered(client, 'subscription { held(id: "c") }')).events).toEqual([{ held: 1 }]);
      expect(refused(await answered(client, 'subscription { held(id: "d") }'))).toEqual(['RATE_LIMITED']);
    });

    it('@ConcurrencyLimit(2): both slots come back when the socket closes, and a new connection of the same client gets them', async () => {
      const first = connect();
      await answered(first, 'subscription { held(id: "a") }');
      await answered(first, 'subscription { held(id: "b") }');
      await first.dispose();
      await until(() => channels.every((channel) => channel.returned), 'the server to stop both streams');
      const second = connect();
      for (const id of ['c', 'd']) expect((await answered(second, `subscription { held(id: "${id}") }`)).events).toEqual([{ held: 1 }]);
      expect(refused(await answered(second, 'subscription { held(id: "e") }'))).toEqual(['RATE_LIMITED']);
    });
  });
});
