import 'reflect-metadata';
import { Body, Controller, HttpCode, Post, UnauthorizedException, type ExecutionContext, type INestApplication } from '@nestjs/common';
import type { Redis } from 'ioredis';
import request from 'supertest';
import { RateLimit, RateLimitHealthIndicator, RateLimitService, RedisStorage, type RateLimitCheck, type RateLimitResult } from '../../lib/index.js';
import { BlockCache, UNSUBSCRIBED_TRUST_MS } from '../../lib/storage/block-cache.js';
import { scriptCalls } from '../support/assertions.js';
import { FakeClock } from '../support/fake-clock.js';
import { registerTestMetrics } from '../support/metrics-reader.js';
import { startRedisGateProxy, type RedisGateProxy } from '../support/redis-gate-proxy.js';
import { startPrivateRedis, startRedis, type ControllableRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, type HttpPlatform } from '../support/scenario-app.js';
import { until } from '../support/until.js';

/** Each request names its client in a header: the identity is `client:<name>`. */
const byClientHeader = (context: ExecutionContext) => `client:${String(context.switchToHttp().getRequest().headers['x-client'])}`;

@Controller()
class LoginController {
  @Post('login')
  @HttpCode(200)
  @RateLimit('3/minute', { key: byClientHeader, bucket: 'login', count: 'failures', blockFor: '15 minutes' })
  login(@Body() body: { password?: string }) {
    if (body.password !== 'right') throw new UnauthorizedException();
    return { ok: true };
  }
}

/** Every instance's service calls and checks get this long: holding replies for a few ms never times one out. */
const STORAGE_TIMEOUT = 2_000;
const LOCKOUT_S = String(15 * 60);


/** One app instance: its storage, its RateLimitService and its login route. */
interface Instance {
  readonly app: INestApplication;
  readonly storage: RedisStorage;
  readonly service: RateLimitService;
  login(client: string, password: string): ReturnType<ReturnType<typeof request>['post']>;
}

async function startInstance(storage: RedisStorage, platform: HttpPlatform): Promise<Instance> {
  const app = await createScenarioApp([LoginController], { storage, storageTimeout: STORAGE_TIMEOUT }, { platform, forceCloseConnections: true });
  return {
    app,
    storage,
    service: app.get(RateLimitService),
    login: (client, password) => request(app.getHttpServer()).post('/login').set('x-client', client).send({ password }),
  };
}

async function stopInstances(instances: Instance[]): Promise<void> {
  for (const { app, storage } of instances.splice(0)) {
    await app.close();
    await storage.close(); // already closed by the module's shutdown; closing twice is harmless
  }
}

/** A channel of the test's own: under REDIS_URL, other files' resets never reach these caches. */
const channelOfOwn = () => `test:reset-race:${process.pid}:${Math.random().toString(36).slice(2)}`;

/**
 * The race: instance B sends a check, Redis runs it and denies the client (it is locked out),
 * then instance A resets the client, and Redis publishes the reset. B's two connections each
 * carry one of the answers: the denial on its main connection, the invalidation on its
 * subscriber. Here B reads the invalidation first, as happens when the main connection is the
 * slower one (a busy event loop reading a big batch, a congested link, a stall): the proxy holds
 * B's main connection's replies, not its subscriber's.
 *
 * Without the generation check, B forgets the key (nothing cached yet), then the denial arrives
 * and B caches it: a 15-minute lockout of a client that was just reset, served from B's memory
 * without asking Redis. The trial's last request then gets a 429 from B instead of a 200 from
 * Redis. In the field, two instances racing a reset through a 30 ms stall left that stale lockout
 * in 8 of 19 trials; here the order is forced, so without the check every trial would (the
 * control test below bypasses the check and sees exactly that). With it, B remembers the
 * generation the check was sent in, sees that an invalidation of the key came since, and does
 * not cache the denial.
 */
describe('a reset racing a denial in flight on another instance', () => {
  let redis: TestRedis;
  let proxy: RedisGateProxy;
  const instances: Instance[] = [];
  beforeAll(async () => {
    redis = await startRedis(); // keyspace commands only: works on a shared REDIS_URL too
  });
  afterEach(async () => {
    proxy?.release();
    await stopInstances(instances);
    await proxy?.close();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  /** A on Redis directly; B through the proxy, both of its connections (the subscriber duplicates B's options). */
  async function twoInstances(platform: HttpPlatform) {
    await redis.flush();
    proxy = await startRedisGateProxy(redis.url);
    const clock = new FakeClock(Date.UTC(2030, 0, 1, 8, 0, 20)); // no window ends during the test
    const channel = channelOfOwn();
    const a = await startInstance(new RedisStorage({ url: redis.url, clock: clock.now, blockCache: { channel } }), platform);
    instances.push(a);
    const b = await startInstance(new RedisStorage({ url: proxy.url(redis.url), clock: clock.now, blockCache: { channel } }), platform);
    instances.push(b);
    // init() waits for the subscription: both listen, and B's subscriber is the proxy's
    expect(a.storage.invalidationsReceived).toBe(true);
    expect(b.storage.invalidationsReceived).toBe(true);
    expect(proxy.connections).toBe(2);
    expect(proxy.subscribers).toBe(1);
    return { a, b };
  }

  /** One trial; resolves with the status of B's first request after the reset (200 unless a stale lockout). */
  async function trial(a: Instance, b: Instance, n: number): Promise<number> {
    const x = `x${n}`; // the client locked out, then reset while B's denial of it is in flight
    const y = `y${n}`; // a marker: B caches its denial, and drops it when its reset, sent after x's, arrives
    for (let i = 0; i < 3; i++) await a.login(x, 'wrong').expect(401);
    expect((await a.login(x, 'right').expect(429)).headers['retry-after']).toBe(LOCKOUT_S); // blockFor starts
    await a.service.block(`client:${y}`, 'login', '15 minutes');
    const known = b.storage.blockCacheSize; // 0, unless an earlier trial left a stale lockout
    // block() publishes y's keys too: a check B sent before it heard that is rightly not cached
    await until(async () => {
      await b.login(y, 'right').expect(429);
      return b.storage.blockCacheSize === known + 1; // y; x is not known to B
    }, "B has cached y's denial");

    proxy.hold();
    const raced = b.login(x, 'right').then((response) => response); // B's cache does not know x: the check goes to Redis
    await proxy.replyHeld(); // Redis has run the check and answered: x denied, locked out
    await a.service.reset(`client:${x}`, 'login'); // resolves once Redis has published x's keys
    await a.service.reset(`client:${y}`, 'login');
    // One subscriber connection delivers messages in order: once B has dropped y, it has handled x's reset.
    await until(() => b.storage.blockCacheSize === known, "B's subscriber has handled both resets");
    expect(proxy.heldBytes).toBeGreaterThan(0); // and B has still not read its answer
    proxy.release();

    const denied = await raced; // Redis's answer, given before the reset: a 429 is right for this one
    expect(denied.status).toBe(429);
    expect(denied.headers['retry-after']).toBe(LOCKOUT_S);
    return (await b.login(x, 'right')).status; // 200 from Redis; 429 if B cached the stale lockout
  }

  describe.each([
    ['express', 25],
    ['fastify', 20],
  ] as const)('on %s', (platform, trials) => {
    it(`never keeps a denial Redis gave before the reset: ${trials} trials, 0 stale lockouts`, async () => {
      const { a, b } = await twoInstances(platform);
      const statuses: number[] = [];
      for (let n = 0; n < trials; n++) statuses.push(await trial(a, b, n));
      const stale = statuses.filter((status) => status === 429).length;
      expect({ trials: statuses.length, stale }).toEqual({ trials, stale: 0 });
      expect(statuses.every((status) => status === 200)).toBe(true);
    });
  });

  it('the trial sees the stale lockout once the generation check is bypassed (the test can fail)', async () => {
    const { a, b } = await twoInstances('express');
    const record = BlockCache.prototype.record;
    // what the cache did before the fix: record every denial, whenever it was sent
    BlockCache.prototype.record = function (this: BlockCache, checks: readonly RateLimitCheck[], cost: number, sentAt: number, result: RateLimitResult, _sent: number, receivedAt: number) {
      record.call(this, checks, cost, sentAt, result, this.sentGeneration, receivedAt);
    };
    const statuses: number[] = [];
    try {
      for (let n = 0; n < 3; n++) statuses.push(await trial(a, b, n));
    } finally {
      BlockCache.prototype.record = record;
    }
    expect(statuses).toEqual([429, 429, 429]);
  });
});

/**
 * While B's subscription is down and cannot come back (Redis is at maxclients), a reset on A
 * cannot reach B's block cache. B then serves a denial for less than UNSUBSCRIBED_TRUST_MS after
 * it received it, by its own (fake) clock, and asks Redis from then on; the health check and the
 * gauge say so. Once Redis takes connections again, B resubscribes and hears resets again.
 */
describe.each(HTTP_PLATFORMS)('the block cache while its subscription cannot come back, on %s', (platform) => {
  let redis: ControllableRedis; // server-wide commands: CONFIG SET maxclients, CLIENT KILL, commandstats
  let admin: Redis;
  let maxclients: string;
  const instances: Instance[] = [];
  let telemetry: ReturnType<typeof registerTestMetrics> | undefined;
  beforeAll(async () => {
    redis = await startPrivateRedis();
    admin = redis.client(); // connected before maxclients is lowered
    maxclients = (await admin.config('GET', 'maxclients'))[1] as string;
  });
  afterEach(async () => {
    await admin.config('SET', 'maxclients', maxclients);
    await stopInstances(instances);
    await telemetry?.stop();
    telemetry = undefined;
  });
  afterAll(async () => {
    await redis?.stop();
  });

  const scriptCallsNow = async () => scriptCalls(await admin.info('commandstats'));
  const infoField = async (section: string, field: string) => Number(new RegExp(`${field}:(\\d+)`).exec(await admin.info(section))?.[1]);

  it(`serves a denial for less than ${UNSUBSCRIBED_TRUST_MS} ms of its clock, then asks Redis; resubscribes once it can`, async () => {
    await admin.flushdb();
    const clock = new FakeClock(Date.UTC(2030, 0, 1, 8, 0, 20));
    const channel = channelOfOwn();
    const a = await startInstance(new RedisStorage({ url: redis.url, clock: clock.now, blockCache: { channel } }), platform);
    instances.push(a);
    telemetry = registerTestMetrics(); // after A: only B reports the gauge
    const b = await startInstance(
      new RedisStorage({ url: redis.url, clock: clock.now, blockCache: { channel }, options: { connectionName: 'instance-b' } }),
      platform,
    );
    instances.push(b);
    const health = b.app.get(RateLimitHealthIndicator);
    const gauge = () => telemetry!.value('ratelimit.block_cache.subscribed');
    expect(b.storage.invalidationsReceived).toBe(true);
    expect((await health.isHealthy()).ratelimit).toMatchObject({ status: 'up', invalidations: 'subscribed' });
    expect(await gauge()).toBe(1);

    // X locked out; B hears it from Redis once, then answers from its cache
    for (let i = 0; i < 3; i++) await a.login('x', 'wrong').expect(401);
    expect((await b.login('x', 'right').expect(429)).headers['retry-after']).toBe(LOCKOUT_S); // received at clock.time
    const receivedAt = clock.time;
    await admin.config('RESETSTAT');
    for (let i = 0; i < 3; i++) await b.login('x', 'right').expect(429);
    expect(await scriptCallsNow()).toBe(0);

    // B's subscriber is cut, and Redis refuses every new connection: it cannot come back
    const subscriberId = /(?:^|\n)id=(\d+) [^\n]*name=instance-b [^\n]*flags=P/.exec(String(await admin.client('LIST')))?.[1];
    expect(subscriberId).toBeDefined();
    const connected = await infoField('clients', 'connected_clients');
    await admin.config('SET', 'maxclients', String(connected - 1)); // those left once it is gone
    const rejectedBefore = await infoField('stats', 'rejected_connections');
    expect(await admin.client('KILL', 'ID', subscriberId!)).toBe(1);
    await until(async () => (await infoField('stats', 'rejected_connections')) > rejectedBefore, 'B has tried to reconnect its subscriber and been refused');
    expect(b.storage.invalidationsReceived).toBe(false);
    expect((await health.isHealthy()).ratelimit).toMatchObject({ status: 'up', invalidations: 'unsubscribed' });
    expect(await gauge()).toBe(0);

    await a.service.reset('client:x', 'login'); // published, but B is not listening
    await admin.config('RESETSTAT');
    await b.login('x', 'right').expect(429); // a stale denial, but received 0 ms ago: still trusted
    clock.advance(UNSUBSCRIBED_TRUST_MS - 1);
    expect(clock.time - receivedAt).toBe(999);
    expect((await b.login('x', 'right').expect(429)).headers['retry-after']).toBe(String(15 * 60 - 1));
    expect(await scriptCallsNow()).toBe(0); // both from B's cache
    clock.advance(1); // 1000 ms after B received the denial: no longer trusted
    await b.login('x', 'right').expect(200);
    expect(await scriptCallsNow()).toBeGreaterThanOrEqual(1); // Redis answered, with the reset's effect
    // the check, then the success's refund, which may land after the response
    await until(async () => (await scriptCallsNow()) === 2, 'the check and the refund have reached Redis');
    expect(b.storage.invalidationsReceived).toBe(false); // still refused all along

    // Redis takes connections again: B resubscribes (within its 500 ms reconnect backoff)
    await admin.config('SET', 'maxclients', maxclients);
    await until(() => b.storage.invalidationsReceived === true, 'B has resubscribed');
    expect((await health.isHealthy()).ratelimit).toMatchObject({ status: 'up', invalidations: 'subscribed' });
    expect(await gauge()).toBe(1);

    // ...and resets on A reach it again, without its clock moving
    for (let i = 0; i < 3; i++) await a.login('z', 'wrong').expect(401);
    await b.login('z', 'right').expect(429);
    await b.login('z', 'right').expect(429); // from B's cache
    await a.service.reset('client:z', 'login');
    await until(() => b.storage.blockCacheSize === 0, "A's reset of z has reached B");
    await b.login('z', 'right').expect(200);
  });
});
