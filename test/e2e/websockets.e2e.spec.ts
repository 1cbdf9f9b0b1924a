import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Catch, Logger, UseFilters, type ArgumentsHost, type ExceptionFilter, type ExecutionContext, type INestApplication } from '@nestjs/common';
import { MessageBody, SubscribeMessage, WebSocketGateway, WsException, type OnGatewayConnection } from '@nestjs/websockets';
import type { IncomingMessage } from 'node:http';
import {
  HeaderKeyResolver,
  IpKeyResolver,
  RateLimit,
  RateLimitExceededException,
  RateLimitModule,
  RedisStorage,
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
import { connectWs, createWsApp, WS_PLATFORMS, type WsPlatform, type WsTestClient } from '../support/ws-client.js';
import { exact } from '../support/exact.js';

/** Handler runs, by handler: a denied message must never add one. */
const calls: Record<string, number> = {};
const ran = (handler: string) => void (calls[handler] = (calls[handler] ?? 0) + 1);

const rateLimited = (retryAfter: number) => ({
  event: 'exception',
  data: { status: 'error', code: 'RATE_LIMITED', message: 'Rate limit exceeded', retryAfter },
});

/** Counts by the `user` of the message itself. */
class MessageUserKeyResolver implements RateLimitKeyResolver {
  resolve(context: ExecutionContext) {
    return context.switchToWs().getData<{ user?: string } | undefined>()?.user;
  }
}

@WebSocketGateway()
@RateLimit('5/minute') // every handler, per client address
class QuotesGateway implements OnGatewayConnection {
  /** `ws`: keep the upgrade request where key resolvers read it (socket.io has it already). */
  handleConnection(client: { request?: unknown }, request?: IncomingMessage) {
    client.request ??= request;
  }

  @SubscribeMessage('ping')
  ping(@MessageBody() data: unknown) {
    ran('ping');
    return { event: 'pong', data };
  }

  @SubscribeMessage('health')
  @SkipRateLimit()
  health() {
    ran('health');
    return { event: 'health', data: 'ok' };
  }

  @SubscribeMessage('burst')
  @RateLimit('2/minute') // replaces the gateway's
  burst() {
    ran('burst');
    return { event: 'burst', data: 'ok' };
  }

  @SubscribeMessage('by-header')
  @RateLimit('2/minute', { key: new HeaderKeyResolver('x-client') })
  byHeader() {
    ran('by-header');
    return { event: 'by-header', data: 'ok' };
  }

  @SubscribeMessage('by-user')
  @RateLimit('2/minute', { key: MessageUserKeyResolver })
  byUser() {
    ran('by-user');
    return { event: 'by-user', data: 'ok' };
  }

  @SubscribeMessage('heavy')
  @RateLimit('5/minute', { cost: 2 })
  heavy() {
    ran('heavy');
    return { event: 'heavy', data: 'ok' };
  }

  @SubscribeMessage('shared-a')
  @RateLimit('3/minute', { bucket: 'shared' })
  sharedA() {
    ran('shared-a');
    return { event: 'shared-a', data: 'ok' };
  }

  @SubscribeMessage('shared-b')
  @RateLimit('3/minute', { bucket: 'shared' })
  sharedB() {
    ran('shared-b');
    return { event: 'shared-b', data: 'ok' };
  }

  @SubscribeMessage('smooth')
  @RateLimit('2/minute', { algorithm: 'token-bucket' })
  smooth() {
    ran('smooth');
    return { event: 'smooth', data: 'ok' };
  }

  @SubscribeMessage('closed-in-outage')
  @RateLimit('100/minute', { onStorageError: 'deny' })
  closedInOutage() {
    ran('closed-in-outage');
    return { event: 'closed-in-outage', data: 'ok' };
  }

  @SubscribeMessage('local-in-outage')
  @RateLimit('2/minute', { onStorageError: 'memory' })
  localInOutage() {
    ran('local-in-outage');
    return { event: 'local-in-outage', data: 'ok' };
  }
}

/** No @RateLimit anywhere: only the module's defaultLimit applies. */
@WebSocketGateway()
class PlainGateway {
  @SubscribeMessage('a')
  a() {
    ran('a');
    return { event: 'a', data: 'ok' };
  }

  @SubscribeMessage('b')
  b() {
    ran('b');
    return { event: 'b', data: 'ok' };
  }

  @SubscribeMessage('exempt')
  @SkipRateLimit()
  exempt() {
    ran('exempt');
    return { event: 'exempt', data: 'ok' };
  }
}

const answer = (event: string, data: unknown = 'ok') => ({ event, data });

/** Answers any exception with a `custom` event: `ws` sockets have `send`, socket.io's `emit`. */
@Catch()
class CatchAllFilter implements ExceptionFilter {
  catch(exception: unknown, host: ArgumentsHost) {
    const client = host.switchToWs().getClient<{ readyState?: number; send(data: string): void; emit(event: string, data: unknown): void }>();
    const data = exception instanceof RateLimitExceededException ? 'refused' : 'other';
    if (typeof client.readyState === 'number') client.send(JSON.stringify({ event: 'custom', data }));
    else client.emit('custom', data);
  }
}

/** Catches only WsException: refusals are not its business. */
@Catch(WsException)
class WsErrorFilter implements ExceptionFilter {
  catch(_exception: WsException, host: ArgumentsHost) {
    CatchAllFilter.prototype.catch(new Error('ws'), host);
  }
}

/** Filters of the app's own, on the gateway and on a handler. */
@WebSocketGateway()
@UseFilters(new WsErrorFilter())
@RateLimit('1/minute')
class FilteredGateway {
  @SubscribeMessage('plain')
  plain() {
    return { event: 'plain', data: 'ok' };
  }

  @SubscribeMessage('caught')
  @UseFilters(new CatchAllFilter())
  caught() {
    return { event: 'caught', data: 'ok' };
  }
}

/** A catch-all on the gateway itself. */
@WebSocketGateway()
@UseFilters(new CatchAllFilter())
@RateLimit('1/minute')
class CatchAllGateway {
  @SubscribeMessage('any')
  any() {
    return { event: 'any', data: 'ok' };
  }
}

/** Apps and clients a test opened, closed after it so Jest exits cleanly. */
const apps: INestApplication[] = [];
const clients: WsTestClient[] = [];
let errors: string[];

beforeEach(() => {
  for (const key of Object.keys(calls)) delete calls[key];
  errors = [];
  // Nest logs an exception it cannot answer (the 'Internal server error' path): none may occur
  jest.spyOn(Logger.prototype, 'error').mockImplementation((message: unknown) => void errors.push(String(message)));
});

async function closeAll(): Promise<void> {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  await Promise.all(apps.splice(0).map((app) => app.close()));
}

afterEach(async () => {
  await closeAll();
  jest.restoreAllMocks();
});

async function serve(platform: WsPlatform, gateway: Function, options: RateLimitModuleOptions, host?: string): Promise<number> {
  const { app, port } = await createWsApp(platform, { imports: [RateLimitModule.forRoot(exact(options))], providers: [gateway as never] }, host);
  apps.push(app);
  return port;
}

async function connect(...args: Parameters<typeof connectWs>): Promise<WsTestClient> {
  const client = await connectWs(...args);
  clients.push(client);
  return client;
}

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

describe.each(WS_PLATFORMS)('WebSockets on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', (target: StorageTarget) => {
    let clock: FakeClock;
    let storage: RateLimitStorage;
    let port: number;

    beforeEach(async () => {
      await redis.flush();
      clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20)); // 40 s before the minute's window ends
      storage = target.create(clock); // the module closes it with the app
      port = await serve(platform, QuotesGateway, { storage });
    });

    it('denies the 6th message of 5/minute with the exception event; the handler never sees it, and the connection stays open', async () => {
      const client = await connect(platform, port);
      for (let i = 0; i < 5; i++) expect(await client.ask('ping', { n: i })).toEqual(answer('pong', { n: i }));
      expect(await client.ask('ping', { n: 5 })).toEqual(rateLimited(40));
      expect(await client.ask('ping', { n: 6 })).toEqual(rateLimited(40));
      expect(calls.ping).toBe(5);

      // the same connection: another event at once, and the limited one once the window is over
      expect(client.open).toBe(true);
      expect(await client.ask('health')).toEqual(answer('health'));
      clock.advance(39_999);
      expect(await client.ask('ping', { n: 7 })).toEqual(rateLimited(1));
      clock.advance(1);
      expect(await client.ask('ping', { n: 8 })).toEqual(answer('pong', { n: 8 }));
      expect(calls).toEqual({ ping: 6, health: 1 });
      expect(client.open).toBe(true);
      expect(errors).toEqual([]);
    });

    it("takes a handler's @RateLimit instead of its gateway's, and lets @SkipRateLimit() through uncounted", async () => {
      const client = await connect(platform, port);
      expect(await client.ask('burst')).toEqual(answer('burst'));
      expect(await client.ask('burst')).toEqual(answer('burst'));
      expect(await client.ask('burst')).toEqual(rateLimited(40));
      for (let i = 0; i < 8; i++) expect(await client.ask('health')).toEqual(answer('health'));
      // the gateway's 5/minute is a budget of its own, untouched by either
      for (let i = 0; i < 5; i++) expect(await client.ask('ping', i)).toEqual(answer('pong', i));
      expect(await client.ask('ping', 5)).toEqual(rateLimited(40));
      expect(calls).toEqual({ burst: 2, health: 8, ping: 5 });
    });

    it('keys by the address the client connected from: two connections from one address share one budget', async () => {
      const first = await connect(platform, port);
      const second = await connect(platform, port);
      for (let i = 0; i < 3; i++) expect(await first.ask('ping', i)).toEqual(answer('pong', i));
      for (let i = 3; i < 5; i++) expect(await second.ask('ping', i)).toEqual(answer('pong', i));
      expect(await second.ask('ping', 5)).toEqual(rateLimited(40));
      expect(await first.ask('ping', 6)).toEqual(rateLimited(40));
      expect(calls.ping).toBe(5);
      // the one counter lives under the client's address
      expect(await target.expiresAt(storage, `rl:{ip:127.0.0.1}:${routeId('QuotesGateway.ping')}:fw1m`)).toBe(clock.time + 40_000);
    });

    it(`gives separate budgets to a key resolver's identities: a ${platform === 'ws' ? 'header of the upgrade request' : 'handshake header'}, and the message's data`, async () => {
      const alice = await connect(platform, port, { headers: { 'x-client': 'alice' } });
      const bob = await connect(platform, port, { headers: { 'x-client': 'bob' } });
      const anonymous = await connect(platform, port);
      for (const client of [alice, bob, anonymous]) {
        expect(await client.ask('by-header')).toEqual(answer('by-header'));
        expect(await client.ask('by-header')).toEqual(answer('by-header'));
        expect(await client.ask('by-header')).toEqual(rateLimited(40));
      }
      expect(calls['by-header']).toBe(6);

      // one connection, two users named in the messages
      for (const user of ['ann', 'ann', 'ben', 'ben']) expect(await alice.ask('by-user', { user })).toEqual(answer('by-user'));
      expect(await alice.ask('by-user', { user: 'ann' })).toEqual(rateLimited(40));
      expect(await alice.ask('by-user', { user: 'ben' })).toEqual(rateLimited(40));
      // no user: the client's address, a budget of its own
      expect(await alice.ask('by-user', {})).toEqual(answer('by-user'));
      expect(calls['by-user']).toBe(5);
    });

    it('charges a cost per message, shares a bucket between handlers, and runs the route\'s algorithm', async () => {
      const client = await connect(platform, port);
      // cost 2 of 5: two messages use 4, a third would need 6
      expect(await client.ask('heavy')).toEqual(answer('heavy'));
      expect(await client.ask('heavy')).toEqual(answer('heavy'));
      expect(await client.ask('heavy')).toEqual(rateLimited(40));

      expect(await client.ask('shared-a')).toEqual(answer('shared-a'));
      expect(await client.ask('shared-b')).toEqual(answer('shared-b'));
      expect(await client.ask('shared-a')).toEqual(answer('shared-a'));
      expect(await client.ask('shared-b')).toEqual(rateLimited(40));

      // a token bucket of 2/minute gains a token every 30 s, wherever the minute is
      expect(await client.ask('smooth')).toEqual(answer('smooth'));
      expect(await client.ask('smooth')).toEqual(answer('smooth'));
      expect(await client.ask('smooth')).toEqual(rateLimited(30));
      clock.advance(30_000);
      expect(await client.ask('smooth')).toEqual(answer('smooth'));
      expect(await client.ask('smooth')).toEqual(rateLimited(30));
      expect(calls).toEqual({ heavy: 2, 'shared-a': 2, 'shared-b': 1, smooth: 3 });
    });

    it('applies defaultLimit to a gateway with no @RateLimit, one budget across its handlers, and not to @SkipRateLimit()', async () => {
      const plainPort = await serve(platform, PlainGateway, { storage: target.create(clock), defaultLimit: '3/minute' });
      const client = await connect(platform, plainPort);
      expect(await client.ask('a')).toEqual(answer('a'));
      expect(await client.ask('b')).toEqual(answer('b'));
      expect(await client.ask('a')).toEqual(answer('a'));
      expect(await client.ask('b')).toEqual(rateLimited(40));
      expect(await client.ask('a')).toEqual(rateLimited(40));
      for (let i = 0; i < 5; i++) expect(await client.ask('exempt')).toEqual(answer('exempt'));
      expect(calls).toEqual({ a: 2, b: 1, exempt: 5 });
    });
  });

  describe('the default key', () => {
    it('counts an IPv4-mapped address as IPv4 and an IPv6 address by its /64', async () => {
      const clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20));
      const storage = target().create(clock);
      const port = await serve(platform, QuotesGateway, { storage }, '::'); // dual stack: IPv4 arrives as ::ffff:127.0.0.1
      const v4 = await connect(platform, port, { host: '127.0.0.1' });
      const v6 = await connect(platform, port, { host: '[::1]' });
      for (let i = 0; i < 5; i++) expect(await v4.ask('ping', i)).toEqual(answer('pong', i));
      expect(await v4.ask('ping', 5)).toEqual(rateLimited(40));
      expect(await v6.ask('ping', 6)).toEqual(answer('pong', 6)); // another client
      expect(await target().expiresAt(storage, `rl:{ip:127.0.0.1}:${routeId('QuotesGateway.ping')}:fw1m`)).toBe(clock.time + 40_000);
      expect(await target().expiresAt(storage, `rl:{ip:0:0:0:0::/64}:${routeId('QuotesGateway.ping')}:fw1m`)).toBe(clock.time + 40_000);
    });

    it('groups two IPv6 clients of one /64, and IPv4-mapped with IPv4, as on HTTP', () => {
      const resolver = new IpKeyResolver();
      // a socket.io socket keeps the address in its handshake, a `ws` socket in its upgrade socket
      const client = (address: string) =>
        platform === 'socket.io' ? { handshake: { address }, request: { socket: { remoteAddress: 'ignored' } } } : { _socket: { remoteAddress: address } };
      const key = (address: string) =>
        resolver.resolve({ getType: () => 'ws', getArgByIndex: (i: number) => [client(address), {}][i] } as unknown as ExecutionContext);
      expect(key('2001:db8:1:2:aaaa::1')).toBe('ip:2001:db8:1:2::/64');
      expect(key('2001:DB8:1:2:bbbb:cccc:dddd:eeee')).toBe('ip:2001:db8:1:2::/64');
      expect(key('2001:db8:1:3::1')).toBe('ip:2001:db8:1:3::/64');
      expect(key('::ffff:203.0.113.7')).toBe('ip:203.0.113.7');
      expect(key('203.0.113.7')).toBe('ip:203.0.113.7');
    });
  });

  describe("the app's own exception filters", () => {
    it("come first: a catch-all on the handler or the gateway takes the refusal; a filter of other exceptions leaves it to the module", async () => {
      const client = await connect(platform, await serve(platform, FilteredGateway, {}));
      expect(await client.ask('plain')).toEqual(answer('plain'));
      expect(await client.ask('plain')).toEqual(rateLimited(expect.any(Number) as unknown as number));
      expect(await client.ask('caught')).toEqual(answer('caught'));
      expect(await client.ask('caught')).toEqual(answer('custom', 'refused'));

      const caught = await connect(platform, await serve(platform, CatchAllGateway, {}));
      expect(await caught.ask('any')).toEqual(answer('any'));
      expect(await caught.ask('any')).toEqual(answer('custom', 'refused'));
      expect(errors).toEqual([]);
    });
  });

  describe('while Redis is unreachable', () => {
    let privateRedis: ControllableRedis;
    let port: number;
    let killed = false;

    beforeEach(async () => {
      privateRedis = await startPrivateRedis(); // of its own: this test kills it
      killed = false;
      port = await serve(platform, QuotesGateway, { storage: { type: 'redis', url: privateRedis.url }, storageTimeout: 50 });
    });
    afterEach(async () => {
      await closeAll();
      // up again, and its own client back on it: a client closed while reconnecting keeps a 2 s timer
      if (killed) {
        await privateRedis.restart();
        await privateRedis.flush();
      }
      await privateRedis?.stop();
    });

    it("answers each handler by its failure policy: 'deny' with STORAGE_UNAVAILABLE, 'allow' uncounted, 'memory' counted here", async () => {
      const client = await connect(platform, port);
      expect(await client.ask('closed-in-outage')).toEqual(answer('closed-in-outage'));
      expect(await client.ask('ping', 0)).toEqual(answer('pong', 0));
      await privateRedis.kill();
      killed = true;

      const unavailable = { status: 'error', code: 'STORAGE_UNAVAILABLE', message: 'Rate limiting is temporarily unavailable', retryAfter: 1 };
      expect(await client.ask('closed-in-outage')).toEqual({ event: 'exception', data: unavailable });
      expect(await client.ask('closed-in-outage')).toEqual({ event: 'exception', data: unavailable });
      for (let i = 1; i <= 7; i++) expect(await client.ask('ping', i)).toEqual(answer('pong', i)); // 5/minute, uncounted
      expect(await client.ask('local-in-outage')).toEqual(answer('local-in-outage'));
      expect(await client.ask('local-in-outage')).toEqual(answer('local-in-outage'));
      expect(await client.ask('local-in-outage')).toEqual(rateLimited(expect.any(Number) as unknown as number));
      expect(calls).toEqual({ 'closed-in-outage': 1, ping: 8, 'local-in-outage': 2 });
      expect(client.open).toBe(true);
      expect(errors).toEqual([]);
    });
  });

  describe('two app instances on one Redis', () => {
    it('admit exactly 5 of 12 messages of 5/minute sent at once, 6 to each', async () => {
      await redis.flush();
      const clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20));
      const storageOf = () => new RedisStorage({ url: redis.url, clock: clock.now });
      const ports = [await serve(platform, QuotesGateway, { storage: storageOf() }), await serve(platform, QuotesGateway, { storage: storageOf() })];
      const pair = await Promise.all(ports.map((port) => connect(platform, port)));
      for (const client of pair) for (let i = 0; i < 6; i++) client.send('ping', i);
      const answers = (await Promise.all(pair.map((client) => Promise.all(Array.from({ length: 6 }, () => client.next()))))).flat();
      expect(answers.filter((a) => a.event === 'pong')).toHaveLength(5);
      expect(answers.filter((a) => a.event !== 'pong')).toEqual(Array.from({ length: 7 }, () => rateLimited(40)));
      expect(calls.ping).toBe(5);
    });
  });
});

/** The storage target the address tests use: memory, as the key is what they check. */
function target(): StorageTarget {
  return storageKinds(() => redis)[0];
}
