import 'reflect-metadata';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import request from 'supertest';
import { HeaderKeyResolver, RateLimit, RateLimitService, RedisStorage, StorageUnavailableError } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { startPrivateRedis, type ControllableRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS } from '../support/scenario-app.js';
import { sleep } from '../support/load.js';

@Controller()
class StallController {
  @Get('quote')
  @RateLimit('10/minute', { key: new HeaderKeyResolver('x-client'), bucket: 'stall', onStorageError: 'deny' })
  quote() {
    return { ok: true };
  }
}

const TIMEOUT = 50;
const STALL_MS = 1_500;

/**
 * A Redis that stalls (CLIENT PAUSE, SIGSTOP) runs what it was sent once it wakes. A request the
 * library answered 503, or a RateLimitService call it rejected, must not be charged then: the
 * client was told it failed, and a retry must count once. Every script carries its deadline in
 * the server's clock and does nothing past it. (Before: the client found 5 of its 10 gone after
 * five 503s, and a penalty retried after its rejection counted twice.)
 */
describe.each(HTTP_PLATFORMS)('no charge after a reported failure, on %s', (platform) => {
  let redis: ControllableRedis;
  let app: INestApplication;
  let service: RateLimitService;
  let clock: FakeClock;
  beforeEach(async () => {
    redis = await startPrivateRedis(); // paused and frozen on purpose
    clock = new FakeClock(); // the windows' clock; deadlines go by the server's own
    app = await createScenarioApp(
      [StallController],
      { storage: new RedisStorage({ url: redis.url, clock: clock.now }), storageTimeout: TIMEOUT, circuitBreaker: { failureThreshold: 100 } },
      { platform },
    );
    service = app.get(RateLimitService);
  });
  afterEach(async () => {
    redis.thaw();
    await app.close();
    await redis.stop();
  });

  const quote = (client: string) => request(app.getHttpServer()).get('/quote').set('x-client', client);
  const left = async (client: string) => (await service.peek(`x-client:${client}`, 'stall')).remaining;

  /** Pauses every client of Redis for STALL_MS, and resolves once Redis has run what queued meanwhile. */
  async function stall(during: () => Promise<void>): Promise<void> {
    const admin = redis.client();
    await admin.client('PAUSE', STALL_MS, 'ALL');
    const started = performance.now();
    await during();
    expect(performance.now() - started).toBeLessThan(STALL_MS); // the calls failed while Redis slept
    await admin.ping(); // answered once the pause is over: what was queued before it has run
  }

  it('a request answered 503 while Redis is paused is never charged when it wakes', async () => {
    await quote('ana').expect(200);
    await stall(async () => {
      for (let i = 0; i < 5; i++) {
        const refused = await quote('ana').expect(503);
        expect(refused.body).toMatchObject({ statusCode: 503, message: 'Rate limiting is temporarily unavailable' });
      }
    });
    expect(await left('ana')).toBe(9); // not 4
    for (let i = 0; i < 9; i++) await quote('ana').expect(200);
    await quote('ana').expect(429);
  });

  it("the limit advisor counts no attempt of a request answered 503 while Redis was paused", async () => {
    const observed = await createScenarioApp(
      [StallController],
      { storage: new RedisStorage({ url: redis.url, clock: clock.now }), storageTimeout: TIMEOUT, circuitBreaker: { failureThreshold: 100 }, advisor: { clock: clock.now } },
      { platform },
    );
    try {
      const ask = () => request(observed.getHttpServer()).get('/quote').set('x-client', 'bo');
      await ask().expect(200);
      await stall(async () => {
        for (let i = 0; i < 5; i++) await ask().expect(503);
      });
      // the counter Redis keeps beside the client's state: the admitted request alone, not the 5
      // checks that ran, late, once it woke
      const admin = redis.client();
      const counters = await admin.keys('rl:{x-client:bo}:*:o*');
      expect(counters).toHaveLength(1);
      expect(await admin.get(counters[0])).toBe('1');
      await ask().expect(200);
      expect(await admin.get(counters[0])).toBe('2');
      const { policies } = await observed.get(RateLimitService).advisorReport();
      expect(policies.map(({ name, requests }) => ({ name, requests }))).toEqual([{ name: 'stall', requests: 2 }]);
    } finally {
      await observed.close();
    }
  });

  it('a penalty rejected while Redis is frozen never applies, so retrying it counts it once', async () => {
    await quote('bob').expect(200);
    redis.freeze();
    try {
      await expect(service.penalize('x-client:bob', 'stall', 2)).rejects.toBeInstanceOf(StorageUnavailableError);
      await expect(service.reward('x-client:bob', 'stall', 1)).rejects.toBeInstanceOf(StorageUnavailableError);
      await expect(service.block('x-client:bob', 'stall', '1 hour')).rejects.toBeInstanceOf(StorageUnavailableError);
    } finally {
      redis.thaw();
    }
    await redis.client().ping(); // what the frozen server had received has run by now
    await sleep(20);
    expect(await left('bob')).toBe(9); // none of the three took effect
    expect(await service.penalize('x-client:bob', 'stall', 2)).toMatchObject({ remaining: 7 });
    expect(await left('bob')).toBe(7); // not 5
  });
});
