import 'reflect-metadata';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import { RateLimit, RedisStorage } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS } from '../support/scenario-app.js';

@Controller()
class QuotaController {
  @Get('quota')
  @RateLimit('50/hour')
  quota() {
    return { ok: true };
  }
}

describe.each(HTTP_PLATFORMS)('two app instances on %s sharing one Redis', (platform) => {
  let redis: TestRedis;
  const apps: INestApplication[] = [];

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await Promise.all(apps.map((app) => app.close()));
    await redis?.stop();
  });

  it('admit exactly the limit out of 200 concurrent requests', async () => {
    // A fixed clock keeps all 200 requests inside one window however slow the machine is.
    const clock = new FakeClock(Date.UTC(2030, 0, 1, 12, 30));
    const urls: string[] = [];
    for (let i = 0; i < 2; i++) {
      const app = await createScenarioApp([QuotaController], { storage: new RedisStorage({ url: redis.url, clock: clock.now }) }, { platform });
      apps.push(app);
      await app.listen(0, '127.0.0.1');
      urls.push(`${await app.getUrl()}/quota`);
    }
    const statuses = await Promise.all(
      Array.from({ length: 200 }, (_, i) => fetch(urls[i % 2]).then(async (res) => (await res.arrayBuffer(), res.status))),
    );
    const admitted = statuses.filter((s) => s === 200).length;
    expect(admitted).toBe(50);
    expect(statuses.filter((s) => s === 429).length).toBe(150);
    // the budget is shared: each instance alone would have admitted 50 of its 100
    for (const url of urls) expect((await fetch(url)).status).toBe(429);
  });
});
