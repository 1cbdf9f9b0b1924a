import 'reflect-metadata';
import {
  Catch,
  Controller,
  Get,
  Inject,
  Injectable,
  Module,
  Post,
  type ArgumentsHost,
  type ExceptionFilter,
  type ExecutionContext,
  type INestApplication,
  UseFilters,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { routeId } from '../../lib/rules/route-id.js';
import request from 'supertest';
import {
  HeaderKeyResolver,
  RateLimitExceededException,
  RateLimit,
  RateLimitModule,
  SkipRateLimit,
  type RateLimitKeyResolver,
  type RateLimitModuleOptions,
} from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { startPrivateRedis, startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, createScenarioApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';

@Injectable()
class AccountsService {
  accountFor(token: string | undefined): string | undefined {
    return token === 'secret-a' ? 'acct-a' : token === 'secret-b' ? 'acct-b' : undefined;
  }
}

/** A resolver class with an injected dependency, as users write them. */
@Injectable()
class AccountKeyResolver implements RateLimitKeyResolver {
  constructor(private readonly accounts: AccountsService) {}
  resolve(context: ExecutionContext): string | undefined {
    return this.accounts.accountFor(context.switchToHttp().getRequest().headers['x-token']);
  }
}

/** ScenarioController's resolver injects AccountsService, so both are listed, as the README says. */
const RESOLVERS = { providers: [AccountsService, AccountKeyResolver] };

@Controller()
@RateLimit('3/minute')
class ScenarioController {
  @Get('limited')
  limited() {
    return { ok: true };
  }

  @Get('per-second')
  @RateLimit('2/second')
  perSecond() {
    return { ok: true };
  }

  @Get('stacked')
  @RateLimit(['2/second', '3/minute'])
  stacked() {
    return { ok: true };
  }

  @Get('free')
  @SkipRateLimit()
  free() {
    return { ok: true };
  }

  @Get('account')
  @RateLimit('2/minute', { key: AccountKeyResolver })
  account() {
    return { ok: true };
  }

  @Get('api-key')
  @RateLimit('2/minute', { key: new HeaderKeyResolver() })
  apiKey() {
    return { ok: true };
  }

  @Get('broken-key')
  @RateLimit('2/minute', { key: () => { throw new Error('resolver bug'); } })
  brokenKey() {
    return { ok: true };
  }

  @Get('smooth')
  @RateLimit('4/second', { algorithm: 'gcra', burst: 2 })
  smooth() {
    return { ok: true };
  }

  @Get('report')
  @RateLimit('10/minute', { cost: 4 })
  report() {
    return { ok: true };
  }

  @Get('export')
  @RateLimit('10/minute', { algorithm: 'token-bucket', cost: (ctx) => Number(ctx.switchToHttp().getRequest().query.rows ?? 1) })
  export() {
    return { ok: true };
  }

  @Get('shared-a')
  @RateLimit('2/minute', { bucket: 'shared' })
  sharedA() {
    return { ok: true };
  }

  @Post('shared-b')
  @RateLimit('2/minute', { bucket: 'shared' })
  sharedB() {
    return { ok: true };
  }
}

@Controller('plain')
class PlainController {
  @Get()
  plain() {
    return { ok: true };
  }
}

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe.each(HTTP_PLATFORMS)('RateLimitModule on %s', (platform) => {
  describe.each(storageKinds(() => redis))('on $name storage', (kind) => {
    let app: INestApplication | undefined;
    let clock: FakeClock;

    beforeEach(async () => {
      await redis.flush();
      clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 0, 250));
    });
    afterEach(async () => {
      await app?.close();
      app = undefined;
    });

    const start = async (options: RateLimitModuleOptions = {}) => {
      app = await createScenarioApp([ScenarioController, PlainController], { storage: kind.create(clock), ...options }, { ...RESOLVERS, platform });
      return request(app.getHttpServer());
    };

    it('answers a denied request with 429, Retry-After, IETF headers and the JSON body', async () => {
      const http = await start();
      for (const r of [2, 1, 0]) {
        const ok = await http.get('/limited').expect(200);
        expect(ok.headers['ratelimit-policy']).toBe('"ScenarioController.limited";q=3;w=60');
        expect(ok.headers.ratelimit).toBe(`"ScenarioController.limited";r=${r};t=60`);
      }
      const denied = await http.get('/limited').expect(429);
      expect(denied.body).toEqual({ statusCode: 429, error: 'Too Many Requests', message: 'Rate limit exceeded', retryAfter: 60 });
      expect(denied.headers['retry-after']).toBe('60');
      expect(denied.headers.ratelimit).toBe('"ScenarioController.limited";r=0;t=60');
      expect(denied.headers['ratelimit-policy']).toBe('"ScenarioController.limited";q=3;w=60');
      expect(denied.headers['content-type']).toBe('application/json; charset=utf-8');
      expect(denied.headers['content-length']).toBe(String(Buffer.byteLength(denied.text)));
      // a refusal is not a representation to cache or revalidate
      expect(denied.headers.etag).toBeUndefined();
      const head = await http.head('/limited').expect(429);
      expect(head.headers['retry-after']).toBe('60');
      expect(head.headers.ratelimit).toBe('"ScenarioController.limited";r=0;t=60');
      expect(head.headers['content-length']).toBe(denied.headers['content-length']);
      expect(head.text ?? '').toBe('');
    });

    it('keeps the headers set before the guard, such as CORS, on the 429', async () => {
      app = await createScenarioApp([ScenarioController], { storage: kind.create(clock) }, {
        ...RESOLVERS,
        platform,
        beforeInit: (nest) => nest.enableCors({ origin: 'https://app.example', exposedHeaders: ['Retry-After', 'RateLimit'] }),
      });
      const http = request(app.getHttpServer());
      for (let i = 0; i < 3; i++) await http.get('/limited').set('Origin', 'https://app.example').expect(200);
      const denied = await http.get('/limited').set('Origin', 'https://app.example').expect(429);
      expect(denied.headers['access-control-allow-origin']).toBe('https://app.example');
      expect(denied.headers['access-control-expose-headers']).toMatch(/^Retry-After, ?RateLimit$/); // Fastify puts a space
      expect(denied.headers['retry-after']).toBe('60');
      expect(denied.body.retryAfter).toBe(60);
    });

    it('lets an exception filter of your own answer the 429, with the headers the exception carries', async () => {
      // written through Nest's HTTP adapter, so the same filter serves Express and Fastify
      @Catch(RateLimitExceededException)
      class TeapotFilter implements ExceptionFilter<RateLimitExceededException> {
        constructor(private readonly adapterHost: HttpAdapterHost) {}
        catch(exception: RateLimitExceededException, host: ArgumentsHost) {
          const { httpAdapter } = this.adapterHost;
          const response = host.switchToHttp().getResponse();
          for (const [name, value] of exception.headers) httpAdapter.setHeader(response, name, value);
          httpAdapter.reply(response, { wait: exception.retryAfter }, 418);
        }
      }
      @Controller('teapot')
      @UseFilters(TeapotFilter)
      class TeapotController {
        @Get()
        @RateLimit('1/minute')
        brew() {
          return { ok: true };
        }
      }
      app = await createScenarioApp([TeapotController], { storage: kind.create(clock) }, { platform });
      const http = request(app.getHttpServer());
      await http.get('/teapot').expect(200);
      const denied = await http.get('/teapot').expect(418);
      expect(denied.body).toEqual({ wait: 60 });
      expect(denied.headers.ratelimit).toBe('"TeapotController.brew";r=0;t=60');
    });

    it('opens the next window when the clock reaches it', async () => {
      const http = await start();
      await http.get('/per-second').expect(200);
      await http.get('/per-second').expect(200);
      const denied = await http.get('/per-second').expect(429);
      expect(denied.headers['retry-after']).toBe('1');
      clock.advance(749);
      await http.get('/per-second').expect(429);
      clock.advance(1);
      const reopened = await http.get('/per-second').expect(200);
      expect(reopened.headers.ratelimit).toBe('"ScenarioController.perSecond";r=1;t=1');
    });

    it('sends legacy headers, both sets, or none, and a configured message', async () => {
      const legacy = await start({ headers: 'legacy', errorMessage: 'Slow down, please' });
      const ok = await legacy.get('/per-second').expect(200);
      expect(ok.headers['x-ratelimit-limit']).toBe('2');
      expect(ok.headers['x-ratelimit-remaining']).toBe('1');
      expect(ok.headers['x-ratelimit-reset']).toBe('1');
      expect(ok.headers.ratelimit).toBeUndefined();
      await legacy.get('/per-second').expect(200);
      const denied = await legacy.get('/per-second').expect(429);
      expect(denied.body.message).toBe('Slow down, please');
      expect(denied.headers['x-ratelimit-remaining']).toBe('0');
      expect(denied.headers['retry-after']).toBe('1');
      await app!.close();

      await redis.flush();
      const both = await start({ headers: 'both' });
      const all = await both.get('/per-second').expect(200);
      expect(all.headers.ratelimit).toBeDefined();
      expect(all.headers['x-ratelimit-limit']).toBe('2');
      await app!.close();

      await redis.flush();
      const none = await start({ headers: false });
      await none.get('/per-second').expect(200);
      await none.get('/per-second').expect(200);
      const bare = await none.get('/per-second').expect(429);
      expect(bare.headers.ratelimit).toBeUndefined();
      expect(bare.headers['x-ratelimit-limit']).toBeUndefined();
      expect(bare.headers['retry-after']).toBe('1');
    });

    it('requires every limit of a route to pass, reporting the tightest', async () => {
      const http = await start();
      const first = await http.get('/stacked').expect(200);
      expect(first.headers['ratelimit-policy']).toBe('"ScenarioController.stacked-1s";q=2;w=1, "ScenarioController.stacked-1m";q=3;w=60');
      expect(first.headers.ratelimit).toBe('"ScenarioController.stacked-1s";r=1;t=1');
      await http.get('/stacked').expect(200);
      await http.get('/stacked').expect(429); // the per-second limit
      clock.advance(1_000);
      await http.get('/stacked').expect(200); // third of the minute
      clock.advance(1_000);
      const minute = await http.get('/stacked').expect(429);
      expect(minute.headers.ratelimit).toBe('"ScenarioController.stacked-1m";r=0;t=58');
      expect(minute.headers['retry-after']).toBe('58');
    });

    it('checks defaultLimit with route limits all-or-nothing, and exempts skipped routes', async () => {
      const http = await start({ defaultLimit: '4/minute' });
      await http.get('/plain').expect(200);
      await http.get('/per-second').expect(200);
      await http.get('/per-second').expect(200);
      // the per-second limit denies: the default budget must not be charged for it
      const denied = await http.get('/per-second').expect(429);
      expect(denied.headers['ratelimit-policy']).toBe('"ScenarioController.perSecond";q=2;w=1, "default";q=4;w=60');
      const ok = await http.get('/plain').expect(200);
      expect(ok.headers.ratelimit).toBe('"default";r=0;t=60');
      const exhausted = await http.get('/plain').expect(429);
      expect(exhausted.headers.ratelimit).toBe('"default";r=0;t=60');
      // skipped routes are exempt from the default limit too
      for (let i = 0; i < 5; i++) {
        const free = await http.get('/free').expect(200);
        expect(free.headers.ratelimit).toBeUndefined();
      }
    });

    it('uses the module default algorithm, and a route its own', async () => {
      const http = await start({ algorithm: 'sliding-window-log' });
      await http.get('/limited').expect(200);
      clock.advance(59_000);
      await http.get('/limited').expect(200);
      await http.get('/limited').expect(200);
      clock.advance(1_000); // a fixed window would reopen here; the log still holds two requests
      const log = await http.get('/limited').expect(200);
      expect(log.headers.ratelimit).toBe('"ScenarioController.limited";r=0;t=60');
      await http.get('/limited').expect(429);

      // gcra, 4/second with a burst of 2: two at once, then one every 250 ms
      await http.get('/smooth').expect(200);
      await http.get('/smooth').expect(200);
      const early = await http.get('/smooth').expect(429);
      expect(early.headers['retry-after']).toBe('1'); // 250 ms, rounded up to whole seconds
      clock.advance(250);
      await http.get('/smooth').expect(200);
      await http.get('/smooth').expect(429);
    });

    it('charges weighted requests their cost, and refuses outright what no wait can admit', async () => {
      const http = await start();
      expect((await http.get('/report').expect(200)).headers.ratelimit).toBe('"ScenarioController.report";r=6;t=60');
      expect((await http.get('/report').expect(200)).headers.ratelimit).toBe('"ScenarioController.report";r=2;t=60');
      const short = await http.get('/report').expect(429);
      expect(short.headers.ratelimit).toBe('"ScenarioController.report";r=2;t=60');

      expect((await http.get('/export?rows=7').expect(200)).headers.ratelimit).toMatch(/r=3;/);
      const tooBig = await http.get('/export?rows=11').expect(429);
      expect(tooBig.body).toEqual({
        statusCode: 429,
        error: 'Too Many Requests',
        message: 'Rate limit exceeded: this request costs 11, more than the 10 that "ScenarioController.export" can ever admit',
        retryAfter: null,
      });
      expect(tooBig.headers['retry-after']).toBeUndefined();
      await http.get('/export?rows=3').expect(200); // the impossible request charged nothing
      await http.get('/export?rows=0').expect(500); // a cost function's bug is not a free pass
    });

    it('shares one budget across routes of one bucket', async () => {
      const http = await start();
      await http.get('/shared-a').expect(200);
      await http.post('/shared-b').expect(201);
      await http.get('/shared-a').expect(429);
      await http.post('/shared-b').expect(429);
    });

    it('keys by an injectable resolver class, falling back to the IP', async () => {
      const http = await start();
      await http.get('/account').set('x-token', 'secret-a').expect(200);
      await http.get('/account').set('x-token', 'secret-a').expect(200);
      await http.get('/account').set('x-token', 'secret-a').expect(429);
      await http.get('/account').set('x-token', 'secret-b').expect(200);
      await http.get('/account').set('x-token', 'unknown').expect(200);
      await http.get('/account').expect(200); // same IP as the unknown token
      await http.get('/account').expect(429);
    });

    it('keys by an API-key header, however long or strange', async () => {
      const http = await start();
      const huge = 'k'.repeat(10_000);
      await http.get('/api-key').set('x-api-key', huge).expect(200);
      await http.get('/api-key').set('x-api-key', huge).expect(200);
      await http.get('/api-key').set('x-api-key', huge).expect(429);
      await http.get('/api-key').set('x-api-key', `${huge}!`).expect(200);
      if (kind.name === 'redis') {
        const keys = await redis.client().keys('*');
        expect(keys.length).toBe(2);
        for (const key of keys) expect(key.length).toBeLessThan(120);
      }
    });

    it('refuses with 500 when the key resolver throws, never letting the request through', async () => {
      const http = await start();
      const response = await http.get('/broken-key').expect(500);
      expect(response.body.statusCode).toBe(500);
    });
  });
});

// Counts commands in INFO commandstats and runs SCRIPT FLUSH, both server-wide: a server of its own.
describe('RateLimitModule on Redis', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startPrivateRedis();
  });
  afterAll(() => redis?.stop());

  describe.each(HTTP_PLATFORMS)('on %s', (platform) => {
    let app: INestApplication | undefined;
    beforeEach(() => redis.flush());
    afterEach(async () => {
      await app?.close();
      app = undefined;
    });

    it('decides each request in one script call, with hash-tagged keys that expire with their window', async () => {
      app = await createScenarioApp([ScenarioController], { storage: { type: 'redis', url: redis.url }, defaultLimit: '100/hour' }, { ...RESOLVERS, platform });
      const admin = redis.client();
      await admin.config('RESETSTAT');
      await request(app.getHttpServer()).get('/stacked').expect(200);
      const stats = await admin.info('commandstats');
      const calls = (name: string) => Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
      expect(calls('evalsha') + calls('eval')).toBe(1);
      const keys = (await admin.keys('rl:*')).sort();
      expect(keys).toEqual([
        'rl:{ip:127.0.0.1}:*:fw1h',
        `rl:{ip:127.0.0.1}:${routeId('ScenarioController.stacked')}:fw1m`,
        `rl:{ip:127.0.0.1}:${routeId('ScenarioController.stacked')}:fw1s`,
      ]);
      const ttls = await Promise.all(keys.map((key) => admin.pttl(key)));
      expect(ttls[0]).toBeGreaterThan(0);
      expect(ttls[0]).toBeLessThanOrEqual(3_600_000);
      expect(ttls[1]).toBeLessThanOrEqual(60_000);
      expect(ttls[2]).toBeLessThanOrEqual(1_000);
    });

    it('quits a client it created on shutdown, and leaves a client it was given open', async () => {
      const own = await createScenarioApp([ScenarioController], { storage: { type: 'redis', url: redis.url } }, { ...RESOLVERS, platform });
      const given = redis.client();
      app = await createScenarioApp([ScenarioController], { storage: { type: 'redis', client: given } }, { ...RESOLVERS, platform });
      await request(own.getHttpServer()).get('/limited').expect(200);
      await request(app.getHttpServer()).get('/limited').expect(200);
      const { RATE_LIMIT_STORAGE } = await import('../../lib/index.js');
      const ownClient = (own.get(RATE_LIMIT_STORAGE) as { client: { status: string; options: Record<string, unknown> } }).client;
      expect(ownClient.options).toMatchObject({ enableAutoPipelining: false, maxRetriesPerRequest: 1 });
      await own.close();
      expect(['end', 'close']).toContain(ownClient.status);
      await app.close();
      app = undefined;
      expect(given.status).toBe('ready');
      expect(await given.ping()).toBe('PONG');
    });

    it('reloads its script after SCRIPT FLUSH', async () => {
      app = await createScenarioApp([ScenarioController], { storage: { type: 'redis', url: redis.url } }, { ...RESOLVERS, platform });
      await request(app.getHttpServer()).get('/limited').expect(200);
      await redis.client().script('FLUSH');
      const after = await request(app.getHttpServer()).get('/limited').expect(200);
      expect(after.headers.ratelimit).toBe('"ScenarioController.limited";r=1;t=' + after.headers.ratelimit.split('t=')[1]);
    });
  });
});

describe('RateLimitModule configuration', () => {
  @Injectable()
  class LimitsConfig {
    readonly rate = '1/minute';
  }
  @Module({ providers: [LimitsConfig], exports: [LimitsConfig] })
  class LimitsConfigModule {}

  describe.each(HTTP_PLATFORMS)('on %s', (platform) => {
    it('takes its options from forRootAsync with useFactory and inject', async () => {
      const { Test } = await import('@nestjs/testing');
      const moduleRef = await Test.createTestingModule({
        imports: [
          RateLimitModule.forRootAsync({
            imports: [LimitsConfigModule],
            inject: [LimitsConfig],
            useFactory: (limits: LimitsConfig) => ({ defaultLimit: limits.rate, headers: 'legacy' }),
          }),
        ],
        controllers: [PlainController],
      }).compile();
      const app = await createHttpApp(moduleRef, { platform });
      try {
        const ok = await request(app.getHttpServer()).get('/plain').expect(200);
        expect(ok.headers['x-ratelimit-limit']).toBe('1');
        await request(app.getHttpServer()).get('/plain').expect(429);
      } finally {
        await app.close();
      }
    });

    it('takes its options from forRootAsync with useClass', async () => {
      const { Test } = await import('@nestjs/testing');
      @Injectable()
      class OptionsFactory {
        constructor(@Inject(LimitsConfig) private readonly limits: LimitsConfig) {}
        create(): RateLimitModuleOptions {
          return { defaultLimit: this.limits.rate };
        }
      }
      const moduleRef = await Test.createTestingModule({
        imports: [RateLimitModule.forRootAsync({ imports: [LimitsConfigModule], useClass: OptionsFactory })],
        controllers: [PlainController],
      }).compile();
      const app = await createHttpApp(moduleRef, { platform });
      try {
        await request(app.getHttpServer()).get('/plain').expect(200);
        await request(app.getHttpServer()).get('/plain').expect(429);
      } finally {
        await app.close();
      }
    });
  });

  it('fails at start-up, naming the problem, for a bad rate or option', async () => {
    expect(() => RateLimitModule.forRoot({ defaultLimit: '10 a minute' })).toThrow(/Invalid rate "10 a minute"/);
    expect(() => RateLimitModule.forRoot({ keyPrefix: 'bad{prefix}' })).toThrow(/keyPrefix/);
    expect(() => RateLimitModule.forRoot({ headers: 'fancy' as never })).toThrow(/headers must be one of/);
    expect(() => RateLimitModule.forRoot({ storage: { type: 'etcd' } as never })).not.toThrow(); // checked when built
    expect(() => RateLimit('100/fortnight')).toThrow(/unknown unit "fortnight"/);
    expect(() => RateLimit('1/second', { bucket: 'has space' })).toThrow(/bucket/);
    expect(() => RateLimit('1/second', { algorithm: 'magic' as never })).toThrow(/Unknown rate-limit algorithm "magic"/);
    expect(() => RateLimit('1/second', { cost: 0 })).toThrow(/cost must be a positive integer, got 0/);
    expect(() => RateLimit('1/second', { algorithm: 'gcra', burst: 2.5 })).toThrow(/burst must be a positive integer/);

    const { Test } = await import('@nestjs/testing');
    await expect(
      Test.createTestingModule({
        imports: [RateLimitModule.forRootAsync({ useFactory: () => ({ defaultLimit: 'lots/minute' }) })],
      }).compile(),
    ).rejects.toThrow(/Invalid rate "lots\/minute"/);
  });
});
