import 'reflect-metadata';
import {
  BadRequestException,
  Body,
  Controller,
  Get,
  HttpCode,
  Post,
  UnauthorizedException,
  type ExecutionContext,
  type INestApplication,
} from '@nestjs/common';
import request from 'supertest';
import { RateLimit, RateLimitService, RedisStorage, StorageUnavailableError, type RateLimitStorage } from '../../lib/index.js';
import { routeId } from '../../lib/rules/route-id.js';
import { remaining } from '../support/assertions.js';
import { FakeClock } from '../support/fake-clock.js';
import { startPrivateRedis, startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import { eventually } from '../support/until.js';

/** Each test names its client in a header, so the identity is known: `client:<name>`. */
const byClientHeader = (context: ExecutionContext) => `client:${String(context.switchToHttp().getRequest().headers['x-client'])}`;

interface Credentials {
  password?: string;
}

@Controller()
class ControlController {
  @Post('login')
  @HttpCode(200)
  @RateLimit('3/minute', { key: byClientHeader, bucket: 'login', count: 'failures', blockFor: '15 minutes' })
  login(@Body() body: Credentials) {
    if (body.password !== 'right') throw new UnauthorizedException();
    return { ok: true };
  }

  @Post('upload')
  @HttpCode(200)
  @RateLimit('2/minute', { key: byClientHeader, count: 'successes' })
  upload(@Body() body: { valid?: boolean }) {
    if (!body.valid) throw new BadRequestException();
    return { ok: true };
  }

  @Get('quotes')
  @RateLimit('5/minute', { key: byClientHeader, bucket: 'quotes' })
  quotes() {
    return { ok: true };
  }

  @Get('tiered')
  @RateLimit(() => '10/minute', { key: byClientHeader, bucket: 'tiered' })
  tiered() {
    return { ok: true };
  }

  @Post('slow-key')
  @HttpCode(200)
  @RateLimit('1/minute', { key: slowKey, count: 'successes' })
  slowKeyRoute() {
    return { ok: true };
  }

  /** Never answers until the test lets it: for requests the client gives up on. */
  @Post('slow-login')
  @HttpCode(200)
  @RateLimit('2/minute', { key: byClientHeader, count: 'failures' })
  async slowLogin() {
    await new Promise<void>((resolve) => (release = resolve));
    return { ok: true };
  }
}

let release: (() => void) | undefined;
/** Lets a slow key resolver answer; set while one waits. */
let answerKey: (() => void) | undefined;
/** Set when the request of a slow key resolver has closed on the server. */
let keyRequestClosed: Promise<void> | undefined;

async function slowKey(context: ExecutionContext): Promise<string> {
  const raw = context.switchToHttp().getResponse();
  const response = 'raw' in raw ? raw.raw : raw;
  keyRequestClosed = new Promise((resolve) => response.once('close', resolve));
  await new Promise<void>((resolve) => (answerKey = resolve));
  return 'client:gil';
}

describe('limits from code, count and blockFor', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  describe.each(HTTP_PLATFORMS)('on %s', (platform) => {
    describe.each(storageKinds(() => redis))('with %s storage', (target) => {
      let app: INestApplication;
      let clock: FakeClock;
      let storage: RateLimitStorage;
      let service: RateLimitService;
      beforeEach(async () => {
        await redis.flush();
        clock = new FakeClock();
        storage = target.create(clock);
        app = await createScenarioApp([ControlController], { storage }, { platform, forceCloseConnections: true });
        service = app.get(RateLimitService);
      });
      afterEach(async () => {
        release?.();
        await app.close();
        await storage.close?.();
      });

      const login = (client: string, password: string) => request(app.getHttpServer()).post('/login').set('x-client', client).send({ password });
      const quote = (client: string) => request(app.getHttpServer()).get('/quotes').set('x-client', client);
      /** What the login budget has left, once every refund has landed. */
      const loginLeft = (client: string, left: number) =>
        eventually(async () => expect((await service.peek(`client:${client}`, 'login')).remaining).toBe(left));

      it("count: 'failures' keeps only failed attempts: successes get their units back", async () => {
        for (let i = 0; i < 5; i++) {
          await login('ana', 'right').expect(200);
          await loginLeft('ana', 3);
        }
        await login('ana', 'wrong').expect(401);
        await login('ana', 'wrong').expect(401);
        await loginLeft('ana', 1);
        await login('ana', 'right').expect(200);
        await loginLeft('ana', 1);
      });

      it('blockFor locks a client out for its duration, then lets it in', async () => {
        for (let i = 0; i < 3; i++) await login('bob', 'wrong').expect(401);
        await loginLeft('bob', 0);
        const locked = await login('bob', 'right').expect(429);
        expect(locked.headers['retry-after']).toBe('900');
        expect(locked.body.retryAfter).toBe(900);
        expect(locked.headers.ratelimit).toBe('"login";r=0;t=900');
        clock.advance(14 * 60_000); // the rate alone would have let it in long ago
        const still = await login('bob', 'right').expect(429);
        expect(still.headers['retry-after']).toBe('60');
        clock.advance(60_000);
        await login('bob', 'right').expect(200);
        // another client was never affected
        await login('cy', 'right').expect(200);
      });

      it('RateLimitService.reset after a successful login clears the failures, and a lockout', async () => {
        await login('dee', 'wrong').expect(401);
        await login('dee', 'wrong').expect(401);
        await service.reset('client:dee', 'login');
        expect((await service.peek('client:dee', 'login')).remaining).toBe(3);
        for (let i = 0; i < 3; i++) await login('dee', 'wrong').expect(401);
        await login('dee', 'right').expect(429);
        await service.reset('client:dee', 'login');
        await login('dee', 'right').expect(200);
      });

      it("count: 'successes' gives failed requests their units back", async () => {
        const upload = (valid: boolean) => request(app.getHttpServer()).post('/upload').set('x-client', 'eve').send({ valid });
        const left = (n: number) =>
          eventually(async () => expect((await service.peek('client:eve', 'ControlController.upload')).remaining).toBe(n));
        for (let i = 0; i < 4; i++) {
          await upload(false).expect(400);
          await left(2);
        }
        await upload(true).expect(200);
        await upload(true).expect(200);
        await upload(true).expect(429);
      });

      it("a request the client abandons counts as failed under count: 'failures'", async () => {
        const server = app.getHttpServer();
        if (!server.listening) await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        const { port } = server.address() as { port: number };
        for (let i = 0; i < 2; i++) {
          const aborted = new AbortController();
          const pending = fetch(`http://127.0.0.1:${port}/slow-login`, { method: 'POST', headers: { 'x-client': 'fay' }, signal: aborted.signal });
          await eventually(async () => expect(release).toBeDefined());
          aborted.abort();
          await expect(pending).rejects.toThrow();
          release = undefined;
        }
        await eventually(async () => expect((await service.peek('client:fay', 'ControlController.slowLogin')).remaining).toBe(0));
        const refused = await fetch(`http://127.0.0.1:${port}/slow-login`, { method: 'POST', headers: { 'x-client': 'fay' } });
        expect(refused.status).toBe(429);
      });

      it("a client gone before the guard admitted it counts as failed: under count: 'successes' its unit comes back", async () => {
        const server = app.getHttpServer();
        if (!server.listening) await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        const { port } = server.address() as { port: number };
        const aborted = new AbortController();
        const pending = fetch(`http://127.0.0.1:${port}/slow-key`, { method: 'POST', signal: aborted.signal });
        await eventually(async () => expect(answerKey).toBeDefined());
        aborted.abort();
        await expect(pending).rejects.toThrow();
        await keyRequestClosed;
        answerKey!();
        answerKey = undefined;
        // the guard has charged once the key exists (a refund keeps it, at 0)
        await eventually(async () => expect(await target.expiresAt(storage, `rl:{client:gil}:${routeId('ControlController.slowKeyRoute')}:fw1m`)).toBeDefined());
        await eventually(async () => expect((await service.peek('client:gil', 'ControlController.slowKeyRoute')).remaining).toBe(1));
      });

      it('consume, peek, reward and penalize share the budget of the route with the same bucket', async () => {
        await quote('gus').expect(200);
        await quote('gus').expect(200);
        expect(await service.peek('client:gus', 'quotes')).toMatchObject({ allowed: true, limit: 5, remaining: 3 });
        expect(await service.peek('client:gus', 'quotes')).toMatchObject({ remaining: 3 }); // a peek charges nothing
        expect(await service.consume('client:gus', 'quotes', 2)).toMatchObject({ allowed: true, remaining: 1 });
        expect(remaining(await quote('gus').expect(200))).toBe(0);
        const denied = await service.consume('client:gus', 'quotes');
        expect(denied).toMatchObject({ allowed: false, remaining: 0 });
        expect(denied.retryAfterMs).toBeGreaterThan(0);
        expect(await service.reward('client:gus', 'quotes', 2)).toMatchObject({ allowed: true, remaining: 2 });
        expect(remaining(await quote('gus').expect(200))).toBe(1);
        expect(await service.penalize('client:gus', 'quotes', 10)).toMatchObject({ allowed: false, remaining: 0 });
        await quote('gus').expect(429);
        // another client's budget is its own
        expect(remaining(await quote('hal').expect(200))).toBe(4);
      });

      it('block denies a client on a bucket at once, with the block in Retry-After', async () => {
        await service.block('client:ivy', 'quotes', '1 minute');
        const blocked = await quote('ivy').expect(429);
        expect(blocked.headers['retry-after']).toBe('60');
        expect(blocked.body.retryAfter).toBe(60);
        clock.advance(60_000);
        expect(remaining(await quote('ivy').expect(200))).toBe(4);
      });

      it('takes a rate instead of a bucket, with a budget of its own', async () => {
        expect(await service.consume('client:jo', '2/minute')).toMatchObject({ allowed: true, limit: 2, remaining: 1 });
        expect(await service.consume('client:jo', ['2/minute'])).toMatchObject({ allowed: true, remaining: 0 });
        expect(await service.consume('client:jo', { rate: '2/minute' })).toMatchObject({ allowed: false });
        expect(await service.consume('client:jo', { rate: '2/minute', bucket: 'other' })).toMatchObject({ allowed: true });
        await quote('jo').expect(200); // a different budget
      });

      it('says what to do for a bucket it cannot resolve', async () => {
        await expect(service.peek('client:kim', 'nope')).rejects.toThrow(/no decorated route uses the bucket "nope"/);
        await expect(service.peek('client:kim', 'tiered')).rejects.toThrow(/choose their rate per request; pass \{ bucket, rate \}/);
        expect(await service.peek('client:kim', { bucket: 'tiered', rate: '10/minute' })).toMatchObject({ limit: 10, remaining: 10 });
        await expect(service.block('client:kim', 'quotes', '5 fortnights')).rejects.toThrow(/Invalid duration "5 fortnights"/);
        await expect(service.peek('', 'quotes')).rejects.toThrow(/identity must be a non-empty string/);
      });
    });
  });

  describe('across app instances sharing Redis', () => {
    let apps: INestApplication[] = [];
    let storages: RedisStorage[] = [];
    afterEach(async () => {
      for (const app of apps) await app.close();
      for (const storage of storages) await storage.close();
      apps = [];
      storages = [];
    });

    /** Two instances with their block caches on, listening on a channel of this test's own. */
    async function twoInstances(clock: FakeClock) {
      await redis.flush();
      const channel = `test:block-cache:${process.pid}:${Math.random()}`;
      for (let i = 0; i < 2; i++) {
        const storage = new RedisStorage({ url: redis.url, clock: clock.now, blockCache: { channel } });
        storages.push(storage);
        apps.push(await createScenarioApp([ControlController], { storage }));
      }
      // each subscribes on a connection of its own: wait until both listen
      await eventually(async () => expect(Number((await redis.client().pubsub('NUMSUB', channel))[1])).toBe(2));
      return apps.map((app) => ({
        service: app.get(RateLimitService),
        login: (client: string, password: string) => request(app.getHttpServer()).post('/login').set('x-client', client).send({ password }),
        quote: (client: string) => request(app.getHttpServer()).get('/quotes').set('x-client', client),
      }));
    }

    it("a reset on one instance reaches the other's block cache within 100 ms", async () => {
      const clock = new FakeClock();
      const [a, b] = await twoInstances(clock);
      for (let i = 0; i < 3; i++) await b.login('lee', 'wrong').expect(401);
      await b.login('lee', 'right').expect(429); // B now denies lee from its block cache
      const keys = await redis.client().keys('rl:{client:lee}:*');
      expect(keys.length).toBe(1);
      await redis.client().del(...keys); // deleting the state by hand does not reach the cache...
      await b.login('lee', 'right').expect(429);

      await a.service.reset('client:lee', 'login'); // ...a reset does
      const resetAt = performance.now();
      for (;;) {
        const response = await b.login('lee', 'right');
        if (response.status === 200) break;
        expect(performance.now() - resetAt).toBeLessThan(100);
      }
    });

    it('a block on one instance holds on the other at once, and blockFor holds on both', async () => {
      const clock = new FakeClock();
      const [a, b] = await twoInstances(clock);
      await a.quote('max').expect(200);
      await a.service.block('client:max', 'quotes', '2 minutes');
      const blocked = await b.quote('max').expect(429);
      expect(blocked.headers['retry-after']).toBe('120');

      for (let i = 0; i < 3; i++) await a.login('ned', 'wrong').expect(401);
      await a.login('ned', 'right').expect(429);
      const elsewhere = await b.login('ned', 'right').expect(429);
      expect(elsewhere.headers['retry-after']).toBe('900');
    });

    it('a refund that reopens an exhausted budget reaches the other instance', async () => {
      const clock = new FakeClock();
      const [a, b] = await twoInstances(clock);
      for (let i = 0; i < 5; i++) await b.quote('ola').expect(200);
      await b.quote('ola').expect(429); // cached by B
      await a.service.reward('client:ola', 'quotes');
      const rewardedAt = performance.now();
      for (;;) {
        const response = await b.quote('ola');
        if (response.status === 200) break;
        expect(performance.now() - rewardedAt).toBeLessThan(100);
      }
    });
  });

  describe('when Redis cannot answer', () => {
    it('a service call rejects with StorageUnavailableError within the storage timeout, frozen or down', async () => {
      const privateRedis = await startPrivateRedis(); // frozen and killed on purpose
      const storage = new RedisStorage({ url: privateRedis.url });
      const app = await createScenarioApp([ControlController], { storage, storageTimeout: 50 });
      try {
        const service = app.get(RateLimitService);
        expect(await service.peek('client:una', 'quotes')).toMatchObject({ remaining: 5 });
        privateRedis.freeze();
        const startedAt = performance.now();
        await expect(service.reset('client:una', 'login')).rejects.toBeInstanceOf(StorageUnavailableError);
        expect(performance.now() - startedAt).toBeLessThan(1_000);
        privateRedis.thaw();
        await privateRedis.kill();
        await expect(service.consume('client:una', 'quotes')).rejects.toBeInstanceOf(StorageUnavailableError);
      } finally {
        await app.close();
        await storage.close();
        await privateRedis.stop();
      }
    });
  });
});
