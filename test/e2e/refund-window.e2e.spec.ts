import 'reflect-metadata';
import { Body, Controller, HttpCode, Param, Post, UnauthorizedException, type ExecutionContext, type INestApplication } from '@nestjs/common';
import type { AddressInfo } from 'node:net';
import { RateLimit, type RateLimitStorage } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { InFlight } from '../support/in-flight.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';

const flight = new InFlight();
const byClient = (context: ExecutionContext) => `client:${String(context.switchToHttp().getRequest().headers['x-client'])}`;

@Controller()
class LoginController {
  /** Slow logins are held by the test: a success charged in one window ends in the next. */
  @Post('login/:id')
  @HttpCode(200)
  @RateLimit('5/10 seconds', { key: byClient, count: 'failures' })
  async login(@Param('id') id: string, @Body() body: { password?: string }) {
    if (id.startsWith('slow')) await flight.hold(id);
    if (body.password !== 'right') throw new UnauthorizedException();
    return { ok: true };
  }
}

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

/**
 * `count: 'failures'` on a fixed window of 5 per 10 s. Slow successes charged in window k end in
 * window k+1: their refund must not make room there, where they took none. (Before, it did: 10
 * failures were admitted within one window.)
 */
describe.each(HTTP_PLATFORMS)("a refund stays in the window it was charged in, on %s", (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', (target: StorageTarget) => {
    let app: INestApplication;
    let storage: RateLimitStorage;
    let clock: FakeClock;
    let base: string;
    let givenBack = 0;
    beforeEach(async () => {
      await redis.flush();
      clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 8)); // 2 s before a window ends
      storage = target.create(clock);
      givenBack = 0;
      // counts the refunds done, so the test knows they have all landed before it goes on
      const refund = storage.refund!.bind(storage);
      storage.refund = async (...args) => {
        await refund(...args);
        givenBack++;
      };
      app = await createScenarioApp([LoginController], { storage }, { platform });
      await app.listen(0, '127.0.0.1');
      base = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
    });
    afterEach(async () => {
      flight.clear();
      await app.close();
      await storage.close?.();
    });

    const login = (id: string, password: string) =>
      fetch(`${base}/login/${id}`, { method: 'POST', headers: { 'x-client': 'mallory', 'content-type': 'application/json' }, body: JSON.stringify({ password }) }).then(
        async (response) => (await response.arrayBuffer(), response.status),
      );

    it('admits 5 failures per window, however many slow successes end in it', async () => {
      const slow = Array.from({ length: 5 }, (_, i) => `slow${i}`);
      const successes = slow.map((id) => login(id, 'right'));
      await Promise.all(slow.map((id) => flight.arrived(id))); // charged in window k
      clock.advance(2_000); // window k+1
      const failures: number[] = [];
      for (let i = 0; i < 5; i++) failures.push(await login(`f${i}`, 'wrong'));
      for (const id of slow) flight.release(id);
      expect(await Promise.all(successes)).toEqual([200, 200, 200, 200, 200]);
      while (givenBack < 5) await new Promise((resolve) => setTimeout(resolve, 5));
      for (let i = 5; i < 10; i++) failures.push(await login(`f${i}`, 'wrong'));
      expect(failures.filter((status) => status === 401)).toHaveLength(5);
      expect(failures.filter((status) => status === 429)).toHaveLength(5);
    });
  });
});
