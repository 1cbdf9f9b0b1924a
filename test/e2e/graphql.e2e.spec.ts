import 'reflect-metadata';
import { Injectable, type ExecutionContext, type INestApplication } from '@nestjs/common';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import {
  Args,
  Field,
  Float,
  GqlExecutionContext,
  GraphQLModule,
  Int,
  Mutation,
  ObjectType,
  Parent,
  Query,
  ResolveField,
  Resolver,
} from '@nestjs/graphql';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import type { Express } from 'express';
import request from 'supertest';
import {
  HeaderKeyResolver,
  MemoryStorage,
  RateLimit,
  RateLimitModule,
  SkipRateLimit,
  type RateLimitKeyResolver,
  type RateLimitModuleOptions,
  type RateLimitStorage,
} from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { routeId } from '../../lib/rules/route-id.js';
import { startPrivateRedis, startRedis, type ControllableRedis, type TestRedis } from '../support/redis-server.js';
import { storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';
import { exact } from '../support/exact.js';

/**
 * GraphQL through Nest's Apollo driver: one check per call of a limited resolver (aliases count
 * apart), denials as `errors[]` entries beside the fields that resolved, the headers of the
 * operation's most constraining check, on memory and on Redis.
 */

@ObjectType()
class Quote {
  @Field() symbol!: string;
  @Field(() => Float) price!: number;
}

/** Which resolvers really ran, by name and argument: a denied one must not. */
const ran: string[] = [];

@Injectable()
class AccountDirectory {
  accountOf(token: string | undefined) {
    return token ? `account:${token.split('-')[0]}` : undefined;
  }
}

/** A resolver class that injects a service and reads the GraphQL context the GraphQL way. */
@Injectable()
class AccountKeyResolver implements RateLimitKeyResolver {
  constructor(private readonly accounts: AccountDirectory) {}
  resolve(context: ExecutionContext) {
    const { req } = GqlExecutionContext.create(context).getContext<{ req: { headers: Record<string, string | undefined> } }>();
    return this.accounts.accountOf(req.headers['x-account']);
  }
}

// Limited fields are nullable: a denied field is null, and null in a non-null field would null its parent.
@Resolver(() => Quote)
class QuoteResolver {
  @Query(() => Quote, { nullable: true })
  @RateLimit('3/minute')
  quote(@Args('symbol') symbol: string): Quote {
    ran.push(`quote:${symbol}`);
    return { symbol, price: symbol.length * 10 };
  }

  @Query(() => String, { nullable: true })
  @RateLimit('10/minute')
  news(): string {
    ran.push('news');
    return 'markets up';
  }

  @Query(() => Float, { nullable: true })
  @RateLimit('5/minute')
  price(): number {
    return 42;
  }

  /** No decorator: free, unless the module has a defaultLimit. */
  @Query(() => String, { nullable: true })
  market(): string {
    ran.push('market');
    return 'open';
  }

  @Query(() => String)
  @SkipRateLimit()
  status(): string {
    return 'ok';
  }

  @Query(() => Int, { nullable: true })
  @RateLimit('5/minute', { bucket: 'reports', cost: 2 })
  report(): number {
    return 2;
  }

  @Query(() => Int, { nullable: true })
  @RateLimit('5/minute', { bucket: 'reports' })
  summary(): number {
    return 1;
  }

  @Query(() => Int, { nullable: true })
  @RateLimit('60/minute', { algorithm: 'token-bucket', burst: 2 })
  burst(): number {
    return 1;
  }

  @Query(() => String, { nullable: true })
  @RateLimit('2/minute', { key: new HeaderKeyResolver('x-api-key') })
  keyed(): string {
    return 'keyed';
  }

  @Query(() => String, { nullable: true })
  @RateLimit('2/minute', { key: AccountKeyResolver })
  account(): string {
    return 'account';
  }

  @Mutation(() => Boolean, { nullable: true })
  @RateLimit('2/minute')
  watch(@Args('symbol') symbol: string): boolean {
    ran.push(`watch:${symbol}`);
    return true;
  }

  @Mutation(() => Boolean, { nullable: true })
  @RateLimit('10/minute')
  note(): boolean {
    ran.push('note');
    return true;
  }

  /** Checked only where the app enables guards on field resolvers. */
  @ResolveField(() => String, { nullable: true })
  @RateLimit('2/minute')
  history(@Parent() quote: Quote): string {
    ran.push(`history:${quote.symbol}`);
    return `${quote.symbol} history`;
  }
}

interface GraphQLAppOptions {
  platform?: 'express' | 'fastify';
  trustProxy?: boolean;
  graphql?: Omit<ApolloDriverConfig, 'driver'>;
}

async function graphqlApp(rateLimit: RateLimitModuleOptions, options: GraphQLAppOptions = {}): Promise<INestApplication> {
  const { platform = 'express', trustProxy, graphql = {} } = options;
  const moduleRef = await Test.createTestingModule({
    imports: [
      RateLimitModule.forRoot(exact(rateLimit)),
      // autoSchemaFile: true keeps the generated schema in memory: no file is written
      GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true, graphiql: false, ...graphql }),
    ],
    providers: [QuoteResolver, AccountDirectory, AccountKeyResolver],
  }).compile();
  if (platform === 'fastify') {
    const app = moduleRef.createNestApplication<NestFastifyApplication>(new FastifyAdapter({ trustProxy: trustProxy ?? false }), { logger: false });
    await app.init();
    await app.getHttpAdapter().getInstance().ready();
    return app;
  }
  const app = moduleRef.createNestApplication(new ExpressAdapter(), { logger: false });
  if (trustProxy !== undefined) (app.getHttpAdapter().getInstance() as Express).set('trust proxy', trustProxy);
  await app.init();
  return app;
}

function operation(app: INestApplication, query: string, headers: Record<string, string> = {}) {
  return request(app.getHttpServer()).post('/graphql').set(headers).send({ query });
}

/** Where `alias:` starts in a one-line query, as GraphQL reports it. */
function at(query: string, alias: string) {
  const index = query.indexOf(`${alias}:`);
  if (index < 0) throw new Error(`no ${alias}: in ${query}`);
  return [{ line: 1, column: index + 1 }];
}

function rateLimited(query: string, path: (string | number)[], retryAfter: number, alias = String(path[0])) {
  return { message: 'Rate limit exceeded', locations: at(query, alias), path, extensions: { code: 'RATE_LIMITED', retryAfter } };
}

// 20 s into a minute: fixed windows end 40 s later, so every retryAfter below is exact.
const START = Date.UTC(2030, 0, 1, 9, 30, 20);

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe.each(storageKinds(() => redis))('GraphQL on $name storage', (target: StorageTarget) => {
  let clock: FakeClock;
  let storage: RateLimitStorage;
  const apps: INestApplication[] = [];
  /** An app on this storage kind, with the test's fake clock; closed after the test. */
  const serve = async (rateLimit: RateLimitModuleOptions = {}, options: GraphQLAppOptions = {}) => {
    storage = target.create(clock);
    const app = await graphqlApp({ storage, ...rateLimit }, options);
    apps.push(app);
    return app;
  };

  beforeEach(async () => {
    await redis.flush();
    clock = new FakeClock(START);
    ran.length = 0;
  });
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((app) => app.close()));
  });

  it('counts each aliased call: the 4th is denied in errors[], the other fields resolve, status 200, headers and Retry-After', async () => {
    const app = await serve();
    const query = '{ a: quote(symbol: "A") { symbol price } b: quote(symbol: "BB") { symbol } c: quote(symbol: "C") { symbol } d: quote(symbol: "D") { symbol } status }';
    const response = await operation(app, query).expect(200);

    expect(response.body).toEqual({
      data: { a: { symbol: 'A', price: 10 }, b: { symbol: 'BB' }, c: { symbol: 'C' }, d: null, status: 'ok' },
      errors: [rateLimited(query, ['d'], 40)],
    });
    expect(ran.sort()).toEqual(['quote:A', 'quote:BB', 'quote:C']); // the denied resolver did not run
    expect(response.headers['ratelimit-policy']).toBe('"QuoteResolver.quote";q=3;w=60');
    expect(response.headers['ratelimit']).toBe('"QuoteResolver.quote";r=0;t=40');
    expect(response.headers['retry-after']).toBe('40');

    // the budget stays spent across operations, until the window ends
    clock.advance(30_000);
    const again = await operation(app, '{ e: quote(symbol: "E") { symbol } }').expect(200);
    expect(again.body).toEqual({ data: { e: null }, errors: [rateLimited('{ e: quote(symbol: "E") { symbol } }', ['e'], 10)] });
    expect(again.headers['retry-after']).toBe('10');
    clock.advance(10_000);
    const next = await operation(app, '{ f: quote(symbol: "F") { symbol } }').expect(200);
    expect(next.body).toEqual({ data: { f: { symbol: 'F' } } });
    expect(next.headers['ratelimit']).toBe('"QuoteResolver.quote";r=2;t=60');
    expect(next.headers['retry-after']).toBeUndefined();
  });

  it.each([
    ['quote first', '{ q: quote(symbol: "A") { symbol } n: news }'],
    ['news first', '{ n: news q: quote(symbol: "A") { symbol } }'],
  ])('an admitted operation carries the headers of its most constraining check (%s)', async (_, query) => {
    const app = await serve();
    const response = await operation(app, query).expect(200);
    expect(response.body).toEqual({ data: { q: { symbol: 'A' }, n: 'markets up' } });
    expect(response.headers['ratelimit-policy']).toBe('"QuoteResolver.quote";q=3;w=60');
    expect(response.headers['ratelimit']).toBe('"QuoteResolver.quote";r=2;t=40');
    expect(response.headers['retry-after']).toBeUndefined();
  });

  it('a denied field puts its headers and Retry-After on the response, over the admitted ones', async () => {
    const app = await serve();
    await operation(app, '{ a: quote(symbol: "A") { symbol } b: quote(symbol: "B") { symbol } c: quote(symbol: "C") { symbol } }').expect(200);
    const query = '{ n: news q: quote(symbol: "Q") { symbol } m: news }';
    const response = await operation(app, query).expect(200);
    expect(response.body).toEqual({ data: { n: 'markets up', q: null, m: 'markets up' }, errors: [rateLimited(query, ['q'], 40)] });
    expect(response.headers['ratelimit-policy']).toBe('"QuoteResolver.quote";q=3;w=60');
    expect(response.headers['ratelimit']).toBe('"QuoteResolver.quote";r=0;t=40');
    expect(response.headers['retry-after']).toBe('40');
  });

  it('counts each call of a mutation, which runs its fields in order; a later admitted field leaves the denial in the headers', async () => {
    const app = await serve();
    const query = 'mutation { a: watch(symbol: "A") b: watch(symbol: "B") c: watch(symbol: "C") n: note }';
    const response = await operation(app, query).expect(200);
    expect(response.body).toEqual({ data: { a: true, b: true, c: null, n: true }, errors: [rateLimited(query, ['c'], 40)] });
    expect(ran).toEqual(['watch:A', 'watch:B', 'note']);
    // `note` (r=9) was admitted after the denial was written: the denial stays the most constraining
    expect(response.headers['ratelimit-policy']).toBe('"QuoteResolver.watch";q=2;w=60');
    expect(response.headers['ratelimit']).toBe('"QuoteResolver.watch";r=0;t=40');
    expect(response.headers['retry-after']).toBe('40');
  });

  it('keys by the client IP of the HTTP request, with the trust proxy rules of HTTP', async () => {
    const app = await serve({}, { trustProxy: true });
    const from = (ip: string) => operation(app, '{ q: quote(symbol: "A") { symbol } }', { 'X-Forwarded-For': ip });
    for (let i = 0; i < 3; i++) expect((await from('203.0.113.1').expect(200)).body).toEqual({ data: { q: { symbol: 'A' } } });
    expect((await from('203.0.113.1').expect(200)).body.data).toEqual({ q: null });
    // another client has a budget of its own; the left-most forwarded address is the client
    expect((await from('203.0.113.2').expect(200)).headers['ratelimit']).toBe('"QuoteResolver.quote";r=2;t=40');
    expect((await from('203.0.113.1, 198.51.100.7').expect(200)).body.data).toEqual({ q: null });
    // the counts are stored under the IP
    expect(await target.expiresAt(storage, `rl:{ip:203.0.113.1}:${routeId('QuoteResolver.quote')}:fw1m`)).toBe(START + 40_000);
    expect(await target.expiresAt(storage, `rl:{ip:203.0.113.2}:${routeId('QuoteResolver.quote')}:fw1m`)).toBe(START + 40_000);
  });

  it('without trust proxy, X-Forwarded-For is ignored: one budget for the socket address', async () => {
    const app = await serve();
    const from = (ip: string) => operation(app, '{ q: quote(symbol: "A") { symbol } }', { 'X-Forwarded-For': ip });
    for (let i = 0; i < 3; i++) await from(`203.0.113.${10 + i}`).expect(200);
    expect((await from('203.0.113.99').expect(200)).body.data).toEqual({ q: null });
    expect(await target.expiresAt(storage, `rl:{ip:127.0.0.1}:${routeId('QuoteResolver.quote')}:fw1m`)).toBe(START + 40_000);
  });

  it('keys by a header (HeaderKeyResolver) or by an injected resolver class reading the GraphQL context', async () => {
    const app = await serve();
    const keyed = '{ k: keyed }';
    for (const key of ['key-1', 'key-1']) expect((await operation(app, keyed, { 'x-api-key': key })).body).toEqual({ data: { k: 'keyed' } });
    expect((await operation(app, keyed, { 'x-api-key': 'key-1' })).body).toEqual({ data: { k: null }, errors: [rateLimited(keyed, ['k'], 40)] });
    expect((await operation(app, keyed, { 'x-api-key': 'key-2' })).body).toEqual({ data: { k: 'keyed' } });

    const account = '{ a: account }';
    // acme-1 and acme-2 are one account; the resolver came from DI, with its dependency
    for (const token of ['acme-1', 'acme-2']) expect((await operation(app, account, { 'x-account': token })).body).toEqual({ data: { a: 'account' } });
    expect((await operation(app, account, { 'x-account': 'acme-3' })).body.data).toEqual({ a: null });
    expect((await operation(app, account, { 'x-account': 'globex-1' })).body.data).toEqual({ a: 'account' });
    // no account: the client IP, a budget of its own
    expect((await operation(app, account)).headers['ratelimit']).toBe('"QuoteResolver.account";r=1;t=40');
  });

  it('applies defaultLimit to undecorated resolvers; @SkipRateLimit() exempts, with no headers', async () => {
    const app = await serve({ defaultLimit: '4/minute' });
    const query = '{ a: market b: market c: market d: market e: market s: status }';
    const response = await operation(app, query).expect(200);
    expect(response.body).toEqual({ data: { a: 'open', b: 'open', c: 'open', d: 'open', e: null, s: 'ok' }, errors: [rateLimited(query, ['e'], 40)] });
    expect(ran).toEqual(['market', 'market', 'market', 'market']);
    expect(response.headers['ratelimit-policy']).toBe('"default";q=4;w=60');
    expect(response.headers['ratelimit']).toBe('"default";r=0;t=40');

    const exempt = await operation(app, '{ a: status b: status c: status d: status e: status }').expect(200);
    expect(exempt.body).toEqual({ data: { a: 'ok', b: 'ok', c: 'ok', d: 'ok', e: 'ok' } });
    expect(exempt.headers['ratelimit']).toBeUndefined();
    expect(exempt.headers['ratelimit-policy']).toBeUndefined();
    expect(exempt.headers['retry-after']).toBeUndefined();
  });

  it('charges cost units to a bucket shared by two resolvers', async () => {
    const app = await serve();
    const spend = await operation(app, '{ r1: report s1: summary r2: report }').expect(200); // 2 + 1 + 2 of 5
    expect(spend.body).toEqual({ data: { r1: 2, s1: 1, r2: 2 } });
    expect(spend.headers['ratelimit']).toBe('"reports";r=0;t=40');
    const query = '{ s2: summary }';
    expect((await operation(app, query)).body).toEqual({ data: { s2: null }, errors: [rateLimited(query, ['s2'], 40)] });
  });

  it("uses the route's algorithm: a token bucket of 2 refills one token a second", async () => {
    const app = await serve();
    const query = '{ a: burst b: burst c: burst }';
    const response = await operation(app, query).expect(200);
    expect(response.body).toEqual({ data: { a: 1, b: 1, c: null }, errors: [rateLimited(query, ['c'], 1)] });
    expect(response.headers['retry-after']).toBe('1');
    clock.advance(1_000);
    expect((await operation(app, '{ d: burst e: burst }')).body.data).toEqual({ d: 1, e: null });
  });

  it("checks field resolvers when the app enables guards on them (fieldResolverEnhancers: ['guards'])", async () => {
    const app = await serve({}, { graphql: { fieldResolverEnhancers: ['guards'] } });
    const query = '{ a: quote(symbol: "A") { symbol history } b: quote(symbol: "B") { symbol history } c: quote(symbol: "C") { symbol history } }';
    const response = await operation(app, query).expect(200);
    expect(response.body).toEqual({
      data: { a: { symbol: 'A', history: 'A history' }, b: { symbol: 'B', history: 'B history' }, c: { symbol: 'C', history: null } },
      errors: [{ message: 'Rate limit exceeded', locations: [{ line: 1, column: query.lastIndexOf('history') + 1 }], path: ['c', 'history'], extensions: { code: 'RATE_LIMITED', retryAfter: 40 } }],
    });
    expect(ran.filter((name) => name.startsWith('history'))).toEqual(['history:A', 'history:B']);
    // the denied field resolver outweighs the quotes' own checks (r=0 of 3 too, but admitted)
    expect(response.headers['ratelimit-policy']).toBe('"QuoteResolver.history";q=2;w=60');
    expect(response.headers['ratelimit']).toBe('"QuoteResolver.history";r=0;t=40');
    expect(response.headers['retry-after']).toBe('40');
  });

  it("also with 'filters' enabled on field resolvers", async () => {
    const app = await serve({}, { graphql: { fieldResolverEnhancers: ['guards', 'filters'] } });
    const query = '{ a: quote(symbol: "A") { history } b: quote(symbol: "B") { history } c: quote(symbol: "C") { history } }';
    const response = await operation(app, query).expect(200);
    expect(response.body.data).toEqual({ a: { history: 'A history' }, b: { history: 'B history' }, c: { history: null } });
    expect(response.body.errors).toEqual([
      { message: 'Rate limit exceeded', locations: [{ line: 1, column: query.lastIndexOf('history') + 1 }], path: ['c', 'history'], extensions: { code: 'RATE_LIMITED', retryAfter: 40 } },
    ]);
  });

  it("with guards on field resolvers, defaultLimit counts every field-resolver call too", async () => {
    const app = await serve({ defaultLimit: '4/minute' }, { graphql: { fieldResolverEnhancers: ['guards'] } });
    // two quotes, each a check of its own rule and of the default; each history field one more of the default
    const query = '{ a: quote(symbol: "A") { history } b: quote(symbol: "B") { history } }';
    const response = await operation(app, query).expect(200);
    expect(response.body.data).toEqual({ a: { history: 'A history' }, b: { history: 'B history' } });
    expect(response.headers['ratelimit-policy']).toBe('"QuoteResolver.history";q=2;w=60, "default";q=4;w=60');
    const next = '{ m: market }';
    expect((await operation(app, next)).body).toEqual({ data: { m: null }, errors: [rateLimited(next, ['m'], 40)] });
  });

  it('leaves field resolvers unchecked where the app does not enable guards on them', async () => {
    const app = await serve();
    const query = '{ a: quote(symbol: "A") { history } b: quote(symbol: "B") { history } c: quote(symbol: "C") { history } }';
    const response = await operation(app, query).expect(200);
    expect(response.body).toEqual({ data: { a: { history: 'A history' }, b: { history: 'B history' }, c: { history: 'C history' } } });
    expect(response.headers['ratelimit']).toBe('"QuoteResolver.quote";r=0;t=40');
  });
});

describe('two app instances on one Redis', () => {
  it('share one budget: 12 concurrent operations on 5/minute, exactly 5 resolve', async () => {
    await redis.flush();
    const clock = new FakeClock(START);
    const [target] = storageKinds(() => redis).filter((kind) => kind.name === 'redis');
    const apps = await Promise.all([0, 1].map(() => graphqlApp({ storage: target.create(clock) })));
    try {
      const responses = await Promise.all(Array.from({ length: 12 }, (_, i) => operation(apps[i % 2], '{ p: price }')));
      const resolved = responses.filter((r) => r.body.data.p === 42);
      const denied = responses.filter((r) => r.body.data.p === null);
      expect(responses.map((r) => r.status)).toEqual(Array(12).fill(200));
      expect(resolved).toHaveLength(5);
      expect(denied).toHaveLength(7);
      for (const r of denied) expect(r.body.errors).toEqual([rateLimited('{ p: price }', ['p'], 40)]);
      // both instances refused some: the budget is one, not one per instance
      expect(new Set(denied.map((r) => responses.indexOf(r) % 2)).size).toBe(2);
      expect(resolved.map((r) => r.headers['ratelimit']).sort()).toEqual([0, 1, 2, 3, 4].map((n) => `"QuoteResolver.price";r=${n};t=40`));
    } finally {
      await Promise.all(apps.map((app) => app.close()));
    }
  });
});

describe('a storage outage', () => {
  @ObjectType()
  class Ticket {
    @Field() id!: string;
  }

  @Resolver(() => Ticket)
  class TicketResolver {
    @Query(() => String, { nullable: true })
    @RateLimit('5/minute', { onStorageError: 'deny' })
    guarded(): string {
      return 'guarded';
    }

    /** The module's policy: allow. */
    @Query(() => Ticket, { nullable: true })
    @RateLimit('5/minute')
    open(): Ticket {
      return { id: 't1' };
    }

    @ResolveField(() => String, { nullable: true })
    @RateLimit('5/minute', { onStorageError: 'deny' })
    detail(): string {
      return 'detail';
    }
  }

  let privateRedis: ControllableRedis;
  let app: INestApplication | undefined;
  beforeAll(async () => {
    privateRedis = await startPrivateRedis();
  });
  afterAll(async () => {
    await app?.close();
    await privateRedis?.stop();
  });

  it("'deny' answers STORAGE_UNAVAILABLE with retryAfter, top-level and field resolvers alike; 'allow' fields resolve", async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        RateLimitModule.forRoot({ storage: { type: 'redis', url: privateRedis.url }, onStorageError: 'allow' }),
        GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true, graphiql: false, fieldResolverEnhancers: ['guards'] }),
      ],
      providers: [TicketResolver],
    }).compile();
    app = moduleRef.createNestApplication(new ExpressAdapter(), { logger: false });
    await app.init();
    const query = '{ g: guarded o: open { id d: detail } }';
    const before = await operation(app, query).expect(200);
    expect(before.body).toEqual({ data: { g: 'guarded', o: { id: 't1', d: 'detail' } } });

    await privateRedis.kill();
    const response = await operation(app, query).expect(200);
    const unavailable = { message: 'Rate limiting is temporarily unavailable', extensions: { code: 'STORAGE_UNAVAILABLE', retryAfter: 1 } };
    expect(response.body).toEqual({
      data: { g: null, o: { id: 't1', d: null } },
      errors: [
        { ...unavailable, locations: at(query, 'g'), path: ['g'] },
        { ...unavailable, locations: at(query, 'd'), path: ['o', 'd'] },
      ],
    });
    expect(response.headers['retry-after']).toBe('1');
    expect(response.headers['ratelimit']).toBeUndefined(); // no check answered

    // Redis is back (empty): once the circuit lets a probe through, checks count again
    await privateRedis.restart();
    let recovered: request.Response | undefined;
    for (const deadline = Date.now() + 5_000; recovered === undefined && Date.now() < deadline; ) {
      const attempt = await operation(app, '{ g: guarded }').expect(200);
      if (attempt.body.data.g === 'guarded') recovered = attempt;
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(recovered?.headers['ratelimit']).toMatch(/^"TicketResolver\.guarded";r=4;t=\d+$/);
  });
});

describe('GraphQL on Fastify', () => {
  let app: INestApplication | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('denies in errors[] and keys by the client IP by default; headers once the context passes the reply', async () => {
    app = await graphqlApp(
      { storage: new MemoryStorage({ clock: new FakeClock(START).now }) },
      { platform: 'fastify', trustProxy: true, graphql: { context: (req: unknown, reply: unknown) => ({ req, reply }) } },
    );
    const query = '{ a: quote(symbol: "A") { symbol } b: quote(symbol: "B") { symbol } c: quote(symbol: "C") { symbol } d: quote(symbol: "D") { symbol } status }';
    const response = await operation(app, query, { 'X-Forwarded-For': '203.0.113.1' }).expect(200);
    expect(response.body).toEqual({
      data: { a: { symbol: 'A' }, b: { symbol: 'B' }, c: { symbol: 'C' }, d: null, status: 'ok' },
      errors: [rateLimited(query, ['d'], 40)],
    });
    expect(response.headers['ratelimit-policy']).toBe('"QuoteResolver.quote";q=3;w=60');
    expect(response.headers['ratelimit']).toBe('"QuoteResolver.quote";r=0;t=40');
    expect(response.headers['retry-after']).toBe('40');
    // trustProxy: another forwarded client has its own budget
    const other = await operation(app, '{ q: quote(symbol: "A") { symbol } }', { 'X-Forwarded-For': '203.0.113.2' }).expect(200);
    expect(other.body).toEqual({ data: { q: { symbol: 'A' } } });
    expect(other.headers['ratelimit']).toBe('"QuoteResolver.quote";r=2;t=40');
  });

  it("with Nest's default context (the request only) the checks hold, but no headers can be set", async () => {
    app = await graphqlApp({}, { platform: 'fastify' });
    const query = '{ a: quote(symbol: "A") { symbol } b: quote(symbol: "B") { symbol } c: quote(symbol: "C") { symbol } d: quote(symbol: "D") { symbol } }';
    const response = await operation(app, query).expect(200);
    expect(response.body.data).toEqual({ a: { symbol: 'A' }, b: { symbol: 'B' }, c: { symbol: 'C' }, d: null });
    expect(response.body.errors).toEqual([
      { message: 'Rate limit exceeded', locations: at(query, 'd'), path: ['d'], extensions: { code: 'RATE_LIMITED', retryAfter: expect.any(Number) } },
    ]);
    expect(response.headers['ratelimit']).toBeUndefined();
    expect(response.headers['retry-after']).toBeUndefined();
  });
});
