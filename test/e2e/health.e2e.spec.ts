import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import { HealthIndicatorService, TerminusModule } from '@nestjs/terminus';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import {
  MemoryStorage,
  RATE_LIMIT_STORAGE,
  RateLimit,
  RateLimitGuard,
  RateLimitHealthIndicator,
  type RateLimitCheck,
  type RateLimitHealthResult,
  type RateLimitModuleOptions,
  type RateLimitResult,
  type RateLimitStorage,
  type RedisStorage,
} from '../../lib/index.js';
import { AppModule } from '../../sample-app/app.module.js';
import { sleep } from '../support/load.js';
import { startPrivateRedis, startRedis, type ControllableRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, createScenarioApp, HTTP_PLATFORMS } from '../support/scenario-app.js';

@Controller()
class LimitedController {
  @Get('limited')
  @RateLimit('100000/minute')
  limited() {
    return { ok: true };
  }
}

/** What the issue asks of an outage and of a recovery: the health check follows within 2 s. */
const FOLLOWS_WITHIN = 2_000;
// CI machines have two cores shared with Redis and Jest: allow scheduling noise.
const MARGIN = 250;

/** Memory underneath, but asynchronous, and its checks can be made to fail as a remote store's would. */
class PinglessStorage implements RateLimitStorage {
  failing = false;
  private readonly memory = new MemoryStorage();

  check(checks: readonly RateLimitCheck[], cost: number): Promise<RateLimitResult> {
    if (this.failing) return Promise.reject(new Error('store unreachable'));
    return Promise.resolve(this.memory.check(checks, cost));
  }
}

class FlakyStorage extends PinglessStorage {
  pings = 0;

  ping(): Promise<void> {
    this.pings++;
    return Promise.resolve();
  }
}

class BrokenPingStorage extends PinglessStorage {
  ping(): void {
    throw new Error('no route to the store');
  }
}

/** Calls `probe` every 25 ms until `done` says so (or 5 s pass); how long it took, and the last answer. */
async function timeUntil<T>(probe: () => Promise<T>, done: (value: T) => boolean): Promise<{ ms: number; last: T }> {
  const start = performance.now();
  let last = await probe();
  while (!done(last) && performance.now() - start < 5_000) {
    await sleep(25);
    last = await probe();
  }
  return { ms: done(last) ? performance.now() - start : Infinity, last };
}

const statusOf = (result: RateLimitHealthResult) => result.ratelimit.status;

describe('RateLimitHealthIndicator', () => {
  let app: INestApplication | undefined;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);

  beforeAll(() => process.on('unhandledRejection', onUnhandled));
  afterAll(() => process.off('unhandledRejection', onUnhandled));
  beforeEach(() => {
    unhandled.length = 0;
  });
  afterEach(async () => {
    await app?.close();
    app = undefined;
    expect(unhandled).toEqual([]);
  });

  async function serve(options: RateLimitModuleOptions, imports: NonNullable<Parameters<typeof createScenarioApp>[2]>['imports'] = []) {
    app = await createScenarioApp([LimitedController], options, { imports });
    return { indicator: app.get(RateLimitHealthIndicator), http: () => request(app!.getHttpServer()) };
  }

  describe('on memory storage', () => {
    it('is up, with the storage type, a latency and the circuit, without TerminusModule in the app', async () => {
      const { indicator } = await serve({ storage: { type: 'memory' } });
      const result = await indicator.isHealthy();
      expect(result).toEqual({ ratelimit: { status: 'up', storage: 'memory', latencyMs: expect.any(Number), circuit: 'closed' } });
      // memory answers at once; a busy machine may still deschedule the process for a slice
      expect(result.ratelimit.latencyMs).toBeLessThan(100);
      // under the key it is given
      expect(await indicator.isHealthy('limiter')).toEqual({ limiter: expect.objectContaining({ status: 'up', storage: 'memory' }) });
    });

    it("uses the app's HealthIndicatorService when the app imports TerminusModule", async () => {
      const { indicator } = await serve({ storage: { type: 'memory' } }, [TerminusModule]);
      const check = jest.spyOn(app!.get(HealthIndicatorService, { strict: false }), 'check');
      expect(statusOf(await indicator.isHealthy())).toBe('up');
      expect(check).toHaveBeenCalledWith('ratelimit');
    });
  });

  describe('on Redis', () => {
    let redis: TestRedis;
    beforeAll(async () => {
      redis = await startRedis();
    });
    afterAll(async () => {
      await redis?.stop();
    });

    it("is up, with the round trip's latency, and the circuit closed", async () => {
      const storageTimeout = 2000; // a busy machine's round trip stays well within it
      const { indicator } = await serve({ storage: { type: 'redis', url: redis.url }, storageTimeout });
      const ping = jest.spyOn(app!.get<RedisStorage>(RATE_LIMIT_STORAGE).client, 'ping');
      const { ratelimit } = await indicator.isHealthy();
      expect(ratelimit).toEqual({ status: 'up', storage: 'redis', latencyMs: expect.any(Number), circuit: 'closed', invalidations: 'subscribed' });
      // a real round trip: a PING, taking more than nothing and less than the timeout
      expect(ping).toHaveBeenCalledTimes(1);
      expect(ratelimit.latencyMs).toBeGreaterThan(0);
      expect(ratelimit.latencyMs).toBeLessThan(storageTimeout);
    });
  });

  describe('through a Redis outage', () => {
    let redis: ControllableRedis;
    beforeEach(async () => {
      redis = await startPrivateRedis(); // killed and frozen on purpose
    });
    afterEach(async () => {
      await app?.close();
      app = undefined;
      await redis.stop();
    });

    it(`is down within ${FOLLOWS_WITHIN} ms of Redis stopping, and up within ${FOLLOWS_WITHIN} ms of its return`, async () => {
      const { indicator } = await serve({ storage: { type: 'redis', url: redis.url } });
      expect(statusOf(await indicator.isHealthy())).toBe('up');

      await redis.kill();
      const down = await timeUntil(() => indicator.isHealthy(), (result) => statusOf(result) === 'down');
      expect(down.ms).toBeLessThan(FOLLOWS_WITHIN);
      expect(down.last.ratelimit).toEqual({
        status: 'down',
        storage: 'redis',
        latencyMs: null,
        circuit: 'closed', // no traffic: the breaker has seen nothing, and health checks do not drive it
        // the subscription's connection hears the close on its own socket, a moment apart
        invalidations: expect.stringMatching(/^(subscribed|unsubscribed)$/),
        reason: 'error',
        message: expect.stringMatching(/^the storage failed a ping: /),
      });
      // ...and then the block cache's subscription has gone with Redis
      const unsubscribed = await timeUntil(() => indicator.isHealthy(), (result) => result.ratelimit.invalidations === 'unsubscribed');
      expect(unsubscribed.ms).toBeLessThan(FOLLOWS_WITHIN);
      expect(unsubscribed.last.ratelimit).toMatchObject({ status: 'down', reason: 'error' });

      await redis.restart();
      const up = await timeUntil(() => indicator.isHealthy(), (result) => statusOf(result) === 'up');
      expect(up.ms).toBeLessThan(FOLLOWS_WITHIN);
      // the block cache's subscription comes back on a connection of its own, a moment apart
      expect(up.last.ratelimit).toEqual({ status: 'up', storage: 'redis', latencyMs: expect.any(Number), circuit: 'closed', invalidations: expect.stringMatching(/^(subscribed|unsubscribed)$/) });
    });

    it('is down within storageTimeout when Redis is frozen, without opening the circuit, and up once it thaws', async () => {
      const storageTimeout = 100;
      const { indicator } = await serve({ storage: { type: 'redis', url: redis.url }, storageTimeout, circuitBreaker: { failureThreshold: 2 } });
      expect(statusOf(await indicator.isHealthy())).toBe('up');

      redis.freeze();
      for (let i = 0; i < 3; i++) {
        const start = performance.now();
        const { ratelimit } = await indicator.isHealthy();
        const took = performance.now() - start;
        expect(ratelimit).toEqual({
          status: 'down',
          storage: 'redis',
          latencyMs: null,
          circuit: 'closed', // three timeouts, threshold 2: the health check is not traffic
          invalidations: 'subscribed', // a frozen Redis keeps its connections: nothing tells it apart
          reason: 'timeout',
          message: `the storage did not answer a ping within ${storageTimeout} ms (storageTimeout)`,
        });
        expect(took).toBeGreaterThanOrEqual(storageTimeout - 5);
        expect(took).toBeLessThan(storageTimeout + MARGIN);
      }

      redis.thaw();
      const up = await timeUntil(() => indicator.isHealthy(), (result) => statusOf(result) === 'up');
      expect(up.ms).toBeLessThan(FOLLOWS_WITHIN);
    });
  });

  describe('and the circuit breaker', () => {
    it('is down while the circuit is open though the storage answers its ping, and up once a probe may pass', async () => {
      const storage = new FlakyStorage();
      const cooldownMs = 600;
      const { indicator, http } = await serve({ storage, circuitBreaker: { failureThreshold: 2, cooldownMs } });
      expect(await indicator.isHealthy()).toEqual({ ratelimit: { status: 'up', storage: 'FlakyStorage', latencyMs: expect.any(Number), circuit: 'closed' } });

      storage.failing = true;
      for (let i = 0; i < 2; i++) await http().get('/limited').expect(200); // 'allow': passes uncounted
      expect(app!.get(RateLimitGuard).circuitState).toBe('open');
      const pingsBefore = storage.pings;
      const { ratelimit } = await indicator.isHealthy();
      expect(ratelimit).toEqual({
        status: 'down',
        storage: 'FlakyStorage',
        latencyMs: expect.any(Number), // it did answer
        circuit: 'open',
        reason: 'circuit-open',
        message: expect.stringContaining('circuit breaker is open'),
      });
      expect(storage.pings).toBe(pingsBefore + 1);

      // the cool-down over, the next request is a probe: the guard may use the storage again
      await sleep(cooldownMs + 50);
      expect((await indicator.isHealthy()).ratelimit).toMatchObject({ status: 'up', circuit: 'half-open' });
      storage.failing = false;
      await http().get('/limited').expect(200);
      expect((await indicator.isHealthy()).ratelimit).toMatchObject({ status: 'up', circuit: 'closed' });
    });

    it('judges a storage without ping() by the circuit alone: up with no latency, down while open', async () => {
      const storage = new PinglessStorage();
      const { indicator, http } = await serve({ storage, circuitBreaker: { failureThreshold: 1, cooldownMs: 60_000 } });
      expect(await indicator.isHealthy()).toEqual({ ratelimit: { status: 'up', storage: 'PinglessStorage', latencyMs: null, circuit: 'closed' } });

      storage.failing = true;
      await http().get('/limited').expect(200);
      expect((await indicator.isHealthy()).ratelimit).toMatchObject({ status: 'down', latencyMs: null, circuit: 'open', reason: 'circuit-open' });
    });

    it('is down when ping() throws', async () => {
      const { indicator } = await serve({ storage: new BrokenPingStorage() });
      expect((await indicator.isHealthy()).ratelimit).toEqual({
        status: 'down',
        storage: 'BrokenPingStorage',
        latencyMs: null,
        circuit: 'closed',
        reason: 'error',
        message: 'the storage failed a ping: no route to the store',
      });
    });
  });
});

describe.each(HTTP_PLATFORMS)("the sample app's GET /health on %s, on Redis", (platform) => {
  let redis: ControllableRedis;
  let app: INestApplication | undefined;
  let base: string;

  beforeAll(async () => {
    redis = await startPrivateRedis(); // killed on purpose
    const moduleRef = await Test.createTestingModule({ imports: [AppModule.register({ storage: { type: 'redis', url: redis.url } })] }).compile();
    app = await createHttpApp(moduleRef, { platform, forceCloseConnections: true });
    await app.listen(0, '127.0.0.1');
    base = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  });
  afterAll(async () => {
    await app?.close();
    await redis?.stop();
  });

  const health = async () => {
    const response = await fetch(`${base}/health`);
    return { status: response.status, body: (await response.json()) as Record<string, any>, headers: response.headers };
  };

  it(`answers 503 with the limiter down within ${FOLLOWS_WITHIN} ms of Redis stopping, and 200 within ${FOLLOWS_WITHIN} ms of its return`, async () => {
    const healthy = await health();
    expect(healthy.status).toBe(200);
    expect(healthy.body).toEqual({
      status: 'ok',
      info: { ratelimit: { status: 'up', storage: 'redis', latencyMs: expect.any(Number), circuit: 'closed', invalidations: 'subscribed' } },
      error: {},
      details: { ratelimit: expect.objectContaining({ status: 'up' }) },
    });
    expect(healthy.headers.get('ratelimit')).toBeNull(); // not rate limited
    expect(healthy.headers.get('cache-control')).toBe('no-cache, no-store, must-revalidate'); // @HealthCheck()

    await redis.kill();
    // traffic during the outage opens the circuit ('allow': it passes uncounted)
    const traffic = (async () => {
      for (let i = 0; i < 10; i++) await (await fetch(`${base}/items`)).arrayBuffer();
    })();
    const down = await timeUntil(health, (answer) => answer.status === 503);
    await traffic;
    expect(down.ms).toBeLessThan(FOLLOWS_WITHIN);
    expect(down.last.body).toEqual({
      status: 'error',
      info: {},
      error: { ratelimit: expect.objectContaining({ status: 'down', storage: 'redis', reason: expect.stringMatching(/^(error|timeout|circuit-open)$/) }) },
      details: { ratelimit: expect.objectContaining({ status: 'down' }) },
    });
    expect((await health()).status).toBe(503); // and it stays down

    await redis.restart();
    const up = await timeUntil(health, (answer) => answer.status === 200);
    expect(up.ms).toBeLessThan(FOLLOWS_WITHIN);
    expect(up.last.body.info.ratelimit).toEqual({
      status: 'up',
      storage: 'redis',
      latencyMs: expect.any(Number),
      circuit: expect.stringMatching(/^(closed|half-open)$/),
      invalidations: expect.stringMatching(/^(subscribed|unsubscribed)$/),
    });
  });
});
