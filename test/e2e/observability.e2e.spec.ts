import 'reflect-metadata';
import { Controller, Get, Logger, type ExecutionContext, type INestApplication } from '@nestjs/common';
import { jest } from '@jest/globals';
import request from 'supertest';
import {
  ConcurrencyLimit,
  RateLimit,
  RedisStorage,
  type RateLimitDecisionEvent,
  type RateLimitModuleOptions,
  type RateLimitResult,
  type RateLimitStorage,
} from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { InFlight } from '../support/in-flight.js';

const flight = new InFlight();
import { registerTestMetrics } from '../support/metrics-reader.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';

const byClient = (context: ExecutionContext) => `client:${String(context.switchToHttp().getRequest().headers['x-client'])}`;

@Controller()
class WatchedController {
  @Get('strict')
  @RateLimit('2/minute', { key: byClient, bucket: 'strict' })
  strict() {
    return { ok: true };
  }

  @Get('trial')
  @RateLimit('1/minute', { key: byClient, bucket: 'trial', mode: 'shadow' })
  trial() {
    return { ok: true };
  }

  @Get('open')
  @RateLimit('5/minute', { key: byClient, bucket: 'open', onStorageError: 'allow' })
  open() {
    return { ok: true };
  }

  @Get('closed')
  @RateLimit('5/minute', { key: byClient, bucket: 'closed', onStorageError: 'deny' })
  closed() {
    return { ok: true };
  }

  @Get('trial-closed')
  @RateLimit('5/minute', { key: byClient, bucket: 'trial-closed', mode: 'shadow', onStorageError: 'deny' })
  trialClosed() {
    return { ok: true };
  }

  @Get('report')
  @ConcurrencyLimit(1, { key: byClient, bucket: 'report' })
  async report() {
    await flight.hold('report');
    return { ok: true };
  }

  @Get('fallback')
  @RateLimit('5/minute', { key: byClient, bucket: 'fallback', onStorageError: 'memory' })
  fallback() {
    return { ok: true };
  }
}

/** A storage that is down: every check fails, so each failure policy answers. */
class BrokenStorage implements RateLimitStorage {
  check(): RateLimitResult {
    throw new Error('connection refused');
  }
  acquire(): never {
    throw new Error('connection refused');
  }
  release(): void {}
}

const telemetry = registerTestMetrics();
afterAll(() => telemetry.stop());

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

const requests = (policy: string, outcome: string) => telemetry.value('ratelimit.requests', { 'ratelimit.policy': policy, 'ratelimit.outcome': outcome });

/** How much `read` grew while `act` ran: instruments are shared by every app of this file. */
async function growth(read: () => Promise<number>, act: () => Promise<unknown>): Promise<number> {
  const before = await read();
  await act();
  return (await read()) - before;
}

describe.each(HTTP_PLATFORMS)('metrics and shadow mode on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', (target) => {
    let app: INestApplication;
    let storage: RateLimitStorage;
    let events: RateLimitDecisionEvent[];
    beforeEach(async () => {
      await redis.flush();
      storage = target.create(new FakeClock());
      events = [];
      app = await createScenarioApp([WatchedController], { storage, onDecision: (event) => events.push(event) }, { platform });
    });
    afterEach(async () => {
      await app.close();
      await storage.close?.();
    });
    const get = (path: string, client: string) => request(app.getHttpServer()).get(path).set('x-client', client);

    it('counts allowed and denied requests per policy, and the allowed ones that left under 20% of the quota', async () => {
      const before = { allowed: await requests('strict', 'allowed'), denied: await requests('strict', 'denied') };
      const near = await growth(
        () => telemetry.value('ratelimit.near_limit', { 'ratelimit.policy': 'strict' }),
        async () => {
          await get('/strict', 'ann').expect(200); // 1 of 2 left: not near
          await get('/strict', 'ann').expect(200); // 0 left: near
          await get('/strict', 'ann').expect(429);
        },
      );
      expect(near).toBe(1);
      expect((await requests('strict', 'allowed')) - before.allowed).toBe(2);
      expect((await requests('strict', 'denied')) - before.denied).toBe(1);
      expect(events.map((e) => [e.route, e.policy, e.outcome, e.identity, e.decision?.remaining])).toEqual([
        ['WatchedController.strict', 'strict', 'allowed', 'client:ann', 1],
        ['WatchedController.strict', 'strict', 'allowed', 'client:ann', 0],
        ['WatchedController.strict', 'strict', 'denied', 'client:ann', 0],
      ]);
    });

    it('times each storage call', async () => {
      const calls = await growth(() => telemetry.value('ratelimit.storage.duration', { 'ratelimit.storage': target.name }), async () => {
        for (let i = 0; i < 3; i++) await get('/strict', 'bea');
      });
      expect(calls).toBe(3);
    });

    it('shadow mode: lets a would-be denial through, charged and counted as shadow_denied, with the headers', async () => {
      const shadowDenied = await growth(
        () => requests('trial', 'shadow_denied'),
        async () => {
          const first = await get('/trial', 'cyd').expect(200);
          expect(first.headers.ratelimit).toBe('"trial";r=0;t=60');
          for (let i = 0; i < 3; i++) {
            const over = await get('/trial', 'cyd').expect(200);
            expect(over.headers.ratelimit).toBe('"trial";r=0;t=60');
          }
        },
      );
      expect(shadowDenied).toBe(3);
      expect(events.map((e) => e.outcome)).toEqual(['allowed', 'shadow_denied', 'shadow_denied', 'shadow_denied']);
      // charged as when enforced: the allowed request used the one unit
      const [, denied] = events;
      expect(denied.decision).toMatchObject({ allowed: false, remaining: 0 });
    });
  });
});

describe('failure policies, the circuit breaker and the block cache, as metrics', () => {
  let app: INestApplication | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('counts fail_open, fail_closed and fallback, and the storage errors; the circuit state gauge opens', async () => {
    const options: RateLimitModuleOptions = { storage: new BrokenStorage(), circuitBreaker: { failureThreshold: 3, cooldownMs: 60_000 } };
    app = await createScenarioApp([WatchedController], options);
    const get = (path: string) => request(app!.getHttpServer()).get(path).set('x-client', 'dan');
    const errors = await growth(() => telemetry.value('ratelimit.storage.errors'), async () => {
      expect(await growth(() => requests('open', 'fail_open'), () => get('/open').expect(200))).toBe(1);
      expect(await growth(() => requests('closed', 'fail_closed'), () => get('/closed').expect(503))).toBe(1);
      expect(await growth(() => requests('fallback', 'fallback'), () => get('/fallback').expect(200))).toBe(1);
    });
    expect(errors).toBe(3);
    const circuit = await telemetry.points('ratelimit.circuit.state');
    expect(circuit.map((p) => p.value)).toContain(1); // open after 3 failures
    // an open circuit makes no call, so nothing fails: no error counted
    expect(await growth(() => telemetry.value('ratelimit.storage.errors'), () => get('/open').expect(200))).toBe(0);
    // shadow mode refuses nothing, the deny policy's 503 included; it counts what would have happened
    expect(await growth(() => requests('trial-closed', 'fail_closed'), () => get('/trial-closed').expect(200))).toBe(1);
  });

  it('counts concurrency limits under their own policy', async () => {
    app = await createScenarioApp([WatchedController], {});
    const server = app.getHttpServer();
    const counted = await growth(
      async () => (await requests('report', 'allowed')) + 10 * (await requests('report', 'denied')),
      async () => {
        const first = request(server).get('/report').set('x-client', 'gus').then((r) => r.status);
        await flight.arrived('report');
        await request(server).get('/report').set('x-client', 'gus').expect(429);
        flight.release('report');
        expect(await first).toBe(200);
      },
    );
    expect(counted).toBe(11); // one allowed, one denied
    flight.clear();
  });

  it('reports the block cache size of a Redis storage', async () => {
    await redis.flush();
    const storage = new RedisStorage({ url: redis.url, clock: new FakeClock().now, blockCache: { channel: `test:${Math.random()}` } });
    app = await createScenarioApp([WatchedController], { storage });
    const get = () => request(app!.getHttpServer()).get('/strict').set('x-client', 'eli');
    await get().expect(200);
    await get().expect(200);
    await get().expect(429);
    const sizes = await telemetry.points('ratelimit.block_cache.size');
    expect(sizes.some((p) => p.attributes['ratelimit.storage'] === 'redis' && p.value === 1)).toBe(true);
    await app.close();
    app = undefined;
    await storage.close();
  });

  it("module-wide shadow mode, with shadowHeaders off: nothing refused, no headers; a long identity reaches the hook hashed", async () => {
    const events: RateLimitDecisionEvent[] = [];
    app = await createScenarioApp([WatchedController], { mode: 'shadow', shadowHeaders: false, onDecision: (event) => events.push(event) });
    const client = 'x'.repeat(200);
    for (let i = 0; i < 3; i++) {
      const response = await request(app.getHttpServer()).get('/strict').set('x-client', client).expect(200);
      expect(response.headers.ratelimit).toBeUndefined();
    }
    expect(events.map((e) => e.outcome)).toEqual(['allowed', 'allowed', 'shadow_denied']);
    expect(events[0].identity).toMatch(/^#[A-Za-z0-9_-]{43}$/);
  });

  it('a hook that throws is logged, and the request goes on', async () => {
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    try {
      app = await createScenarioApp([WatchedController], {
        onDecision: () => {
          throw new Error('analytics are down');
        },
      });
      await request(app.getHttpServer()).get('/strict').set('x-client', 'fay').expect(200);
      expect(warn.mock.calls.some(([message]) => String(message).includes('The onDecision hook threw on WatchedController.strict'))).toBe(true);
    } finally {
      warn.mockRestore();
    }
  });
});
