import 'reflect-metadata';
import { Controller, HttpCode, Param, Post, Res, type ExecutionContext, type INestApplication } from '@nestjs/common';
import type { AddressInfo } from 'node:net';
import { request as httpRequest } from 'node:http';
import { ConcurrencyLimit, RateLimit, RateLimitService, type RateLimitStorage } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { InFlight } from '../support/in-flight.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';
import { until } from '../support/until.js';

/**
 * The attacks of clients that hang up, as reported against the previous release: a success was
 * refunded as a failure when the client hung up before reading it (50 accounts created under a
 * limit of 10), and a concurrency slot was freed by the hang-up while the handler still worked
 * (20 handlers at once under a limit of 2). Handlers are held by promises the test releases, so
 * every hang-up lands exactly where the attack puts it: inside the handler, or before it started.
 */
const flight = new InFlight();
const accounts: string[] = [];
let running = 0;
let mostRunning = 0;

/** The Node response under an Express response or a Fastify reply. */
const rawOf = (response: unknown) => ((response as { raw?: unknown }).raw ?? response) as { once(event: 'close', listener: () => void): unknown };

/** The client names itself, so a test can read its budget: `client:<name>`. */
const byClient = (context: ExecutionContext) => `client:${String(context.switchToHttp().getRequest().headers['x-client'])}`;

/** A key resolver that waits for the test: the client may hang up before the handler starts. */
async function slowClientKey(context: ExecutionContext): Promise<string> {
  const { id } = context.switchToHttp().getRequest<{ params: { id: string } }>().params;
  flight.watchClose(id, rawOf(context.switchToHttp().getResponse()));
  await flight.hold(`key-${id}`);
  return byClient(context);
}

@Controller()
class SignupController {
  @Post('signup/:id')
  @HttpCode(201)
  @RateLimit('10/hour', { key: byClient, count: 'successes' })
  async signup(@Param('id') id: string, @Res({ passthrough: true }) response: unknown) {
    flight.watchClose(id, rawOf(response));
    await flight.hold(id); // about 100 ms of work in the report; here, until the test says
    accounts.push(id);
    return { account: id };
  }

  @Post('slow-signup/:id')
  @HttpCode(201)
  @RateLimit('10/hour', { key: slowClientKey, count: 'successes' })
  slowSignup(@Param('id') id: string) {
    accounts.push(id);
    return { account: id };
  }

  @Post('export/:id')
  @ConcurrencyLimit(2, { key: byClient })
  async export(@Param('id') id: string, @Res({ passthrough: true }) response: unknown) {
    flight.watchClose(id, rawOf(response));
    running++;
    mostRunning = Math.max(mostRunning, running);
    try {
      await flight.hold(id); // 1.5 s of work in the report
      return { id };
    } finally {
      running--;
    }
  }
}

/** A POST on its own connection, answered with its status, or destroyed by `hangUp()`. */
function post(port: number, path: string, client: string): { status: Promise<number | 'hung up'>; hangUp(): void } {
  const request = httpRequest({ host: '127.0.0.1', port, path, method: 'POST', headers: { 'x-client': client }, agent: false });
  const status = new Promise<number | 'hung up'>((resolve) => {
    request.on('response', (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode!));
    });
    request.on('error', () => resolve('hung up'));
  });
  request.end();
  return { status, hangUp: () => request.destroy() };
}

/** Whichever comes first: the handler of `id` reports its arrival, or the request is answered. */
async function arrivedOrAnswered(id: string, status: Promise<number | 'hung up'>): Promise<'arrived' | number | 'hung up'> {
  return Promise.race([flight.arrived(id).then(() => 'arrived' as const), status]);
}


let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

describe.each(HTTP_PLATFORMS)('clients that hang up, on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', (target: StorageTarget) => {
    let app: INestApplication;
    let storage: RateLimitStorage;
    let port: number;
    beforeEach(async () => {
      await redis.flush();
      accounts.length = 0;
      running = mostRunning = 0;
      storage = target.create(new FakeClock());
      app = await createScenarioApp([SignupController], { storage }, { platform, forceCloseConnections: true });
      await app.listen(0, '127.0.0.1');
      port = (app.getHttpServer().address() as AddressInfo).port;
    });
    afterEach(async () => {
      flight.clear();
      await app.close();
      await storage.close?.();
    });

    it("count: 'successes': 50 signups whose clients hang up mid-request create 10 accounts, not 50", async () => {
      const statuses: (number | 'hung up')[] = [];
      for (let i = 0; i < 50; i++) {
        const id = `a${i}`;
        const attempt = post(port, `/signup/${id}`, 'mallory');
        const first = await arrivedOrAnswered(id, attempt.status);
        if (first !== 'arrived') {
          statuses.push(first);
          continue;
        }
        attempt.hangUp(); // the client leaves while the account is being created
        statuses.push(await attempt.status);
        await flight.closed(id); // the server saw it go, before the handler ends
        flight.release(id); // the handler ends, and succeeds
        await until(() => accounts.includes(id), `account ${id}`);
      }
      expect(accounts).toHaveLength(10);
      expect(statuses.filter((s) => s === 429)).toHaveLength(40);
      // each success kept its unit, though nobody read it
      const service = app.get(RateLimitService);
      await until(async () => (await service.peek('client:mallory', 'SignupController.signup')).remaining === 0, 'the budget at 0');
    });

    it("count: 'successes': a client that hangs up before its handler starts gets no account, and its unit back", async () => {
      for (let i = 0; i < 20; i++) {
        const id = `b${i}`;
        const attempt = post(port, `/slow-signup/${id}`, 'trent');
        await flight.arrived(`key-${id}`); // the guard is resolving its key
        attempt.hangUp();
        expect(await attempt.status).toBe('hung up');
        await flight.closed(id); // the server saw it go
        flight.release(`key-${id}`);
      }
      const service = app.get(RateLimitService);
      await until(async () => (await service.peek('client:trent', 'SignupController.slowSignup')).remaining === 10, 'every unit back');
      expect(accounts).toEqual([]); // nothing was done for them
    });

    it('@ConcurrencyLimit(2): 20 requests whose clients hang up mid-request never run more than 2 handlers at once', async () => {
      const statuses: (number | 'hung up')[] = [];
      const inHandler: string[] = [];
      for (let i = 0; i < 20; i++) {
        const id = `c${i}`;
        const attempt = post(port, `/export/${id}`, 'eve');
        const first = await arrivedOrAnswered(id, attempt.status);
        if (first === 'arrived') {
          inHandler.push(id);
          attempt.hangUp(); // 50 ms in, in the report: the handler goes on working
          statuses.push(await attempt.status);
          await flight.closed(id); // the server saw it go
        } else {
          statuses.push(first);
        }
      }
      expect(mostRunning).toBe(2);
      expect(inHandler).toHaveLength(2);
      expect(statuses.filter((s) => s === 429)).toHaveLength(18);
      // once the work is done, the slots come back: two more fit, not three
      for (const id of inHandler) flight.release(id);
      await until(() => running === 0, 'the handlers done');
      const again = [post(port, '/export/d1', 'eve'), post(port, '/export/d2', 'eve')];
      expect(await Promise.all([arrivedOrAnswered('d1', again[0].status), arrivedOrAnswered('d2', again[1].status)])).toEqual(['arrived', 'arrived']);
      expect(await post(port, '/export/d3', 'eve').status).toBe(429);
      flight.release('d1');
      flight.release('d2');
      expect(await Promise.all(again.map((a) => a.status))).toEqual([201, 201]);
    });
  });
});
