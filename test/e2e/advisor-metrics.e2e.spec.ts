import 'reflect-metadata';
import { Controller, Get, type ExecutionContext, type INestApplication } from '@nestjs/common';
import request from 'supertest';
import { LimitAdvisor, RateLimit, type RateLimitStorage } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { registerTestMetrics } from '../support/metrics-reader.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';

@Controller()
class QuotesController {
  @Get('quotes')
  @RateLimit('10/minute', { key: (context: ExecutionContext) => String(context.switchToHttp().getRequest().headers['x-client']) })
  quotes() {
    return { ok: true };
  }
}

const telemetry = registerTestMetrics();
let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
  await telemetry.stop();
});

/** `ratelimit.client_usage`: client-windows whose attempts reached each threshold, a counter that only grows. */
describe.each(storageKinds(() => redis))('ratelimit.client_usage with $name storage', (target: StorageTarget) => {
  let app: INestApplication;
  let storage: RateLimitStorage;
  afterEach(async () => {
    await app?.close();
    await storage?.close?.();
  });

  it('counts the clients that reached each threshold, and keeps counting once figures go to Redis or age out', async () => {
    await redis.flush();
    const clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 5));
    storage = target.create(clock);
    app = await createScenarioApp([QuotesController], { storage, advisor: { clock: clock.now } });
    const usage = (threshold: number) => telemetry.value('ratelimit.client_usage', { 'ratelimit.policy': 'QuotesController.quotes', 'ratelimit.threshold': threshold });
    for (const [client, count] of [['a', 3], ['b', 12], ['c', 15]] as const) {
      for (let i = 0; i < count; i++) await request(app.getHttpServer()).get('/quotes').set('x-client', client);
    }
    // the callback reports this app's totals: 3 clients, 2 of them past 10, 0 past 15
    expect([await usage(1), await usage(11), await usage(16)]).toEqual([3, 2, 0]);
    // figures sent to Redis (or an hour later, rotated out) still count
    await app.get(LimitAdvisor).flush();
    clock.advance(2 * 3_600_000);
    await request(app.getHttpServer()).get('/quotes').set('x-client', 'a');
    expect([await usage(1), await usage(11)]).toEqual([4, 2]);
  });
});
