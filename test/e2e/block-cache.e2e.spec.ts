import 'reflect-metadata';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import request from 'supertest';
import { RateLimit, RedisStorage } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { startPrivateRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS } from '../support/scenario-app.js';
import { scriptCalls } from '../support/assertions.js';

@Controller()
class FloodController {
  @Get('quote')
  @RateLimit('3/minute')
  quote() {
    return { ok: true };
  }
}

describe.each(HTTP_PLATFORMS)('the local block cache on %s', (platform) => {
  let redis: TestRedis;
  let app: INestApplication | undefined;
  beforeAll(async () => {
    redis = await startPrivateRedis(); // counts script calls server-wide: a server of its own
  });
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });
  afterAll(async () => {
    await redis?.stop();
  });

  const scriptCallsNow = async () => scriptCalls(await redis.client().info('commandstats'));

  it('answers a flooding client without a Redis call until its retry-after ends, with correct 429s', async () => {
    await redis.flush();
    const clock = new FakeClock(Date.UTC(2030, 0, 1, 8, 0, 20));
    app = await createScenarioApp([FloodController], { storage: new RedisStorage({ url: redis.url, clock: clock.now }) }, { platform });
    const http = request(app.getHttpServer());
    for (let i = 0; i < 3; i++) await http.get('/quote').expect(200);
    const first = await http.get('/quote').expect(429); // Redis says no, and for how long
    expect(first.headers['retry-after']).toBe('40');

    await redis.client().config('RESETSTAT');
    for (let i = 0; i < 50; i++) {
      clock.advance(500);
      const denied = await http.get('/quote').expect(429);
      expect(denied.body).toMatchObject({ statusCode: 429, message: 'Rate limit exceeded' });
      expect(denied.headers.ratelimit).toBe(`"FloodController.quote";r=0;t=${Math.ceil((40_000 - (i + 1) * 500 - 1) / 1000)}`);
    }
    expect(await scriptCallsNow()).toBe(0);

    clock.advance(15_000); // past the window's end
    await http.get('/quote').expect(200);
    expect(await scriptCallsNow()).toBe(1);
  });

  it('can be turned off', async () => {
    await redis.flush();
    app = await createScenarioApp([FloodController], { storage: { type: 'redis', url: redis.url, blockCache: false } }, { platform });
    const http = request(app.getHttpServer());
    for (let i = 0; i < 4; i++) await http.get('/quote');
    await redis.client().config('RESETSTAT');
    for (let i = 0; i < 10; i++) await http.get('/quote').expect(429);
    expect(await scriptCallsNow()).toBe(10);
  });
});
