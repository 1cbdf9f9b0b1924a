import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Controller, Get, Injectable, Logger, type ExecutionContext, type INestApplication } from '@nestjs/common';
import request from 'supertest';
import { RateLimit, type RateLimitKeyResolver } from '../../lib/index.js';
import { remaining } from '../support/assertions.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';

const header = (context: ExecutionContext, name: string) => context.switchToHttp().getRequest().headers[name] as string | undefined;

/** What a key resolver returns, chosen by the request: the test sends the kind it wants. */
const ANSWERS: Record<string, unknown> = {
  object: { id: 7 },
  boolean: true,
  nan: Number.NaN,
  infinity: Number.POSITIVE_INFINITY,
  symbol: Symbol('who'),
  number: 42,
  'other-number': 43,
  string: 'alice',
  empty: '',
  null: null,
};

@Controller()
class UserCodeController {
  @Get('keyed')
  @RateLimit('2/minute', { key: (context) => ANSWERS[header(context, 'x-answer') ?? 'string'] as string })
  keyed() {
    return { ok: true };
  }

  @Get('async-keyed')
  @RateLimit('2/minute', { key: async (context) => ANSWERS[header(context, 'x-answer') ?? 'string'] as string })
  asyncKeyed() {
    return { ok: true };
  }
}

describe.each(HTTP_PLATFORMS)('on %s', (platform) => {
  describe.each([false, true])('key resolver answers (async: %s)', (async) => {
    let redis: TestRedis;
    beforeAll(async () => {
      redis = await startRedis();
    });
    afterAll(() => redis?.stop());
    const path = async ? '/async-keyed' : '/keyed';

    describe.each(storageKinds(() => redis))('on $name storage', (target: StorageTarget) => {
      let app: INestApplication;
      let errors: string[];
      beforeEach(async () => {
        await redis.flush();
        errors = [];
        jest.spyOn(Logger.prototype, 'error').mockImplementation((message: unknown) => void errors.push(String(message)));
        app = await createScenarioApp([UserCodeController], { storage: target.name === 'memory' ? { type: 'memory' } : { type: 'redis', url: redis.url } }, { platform });
      });
      afterEach(async () => {
        jest.restoreAllMocks();
        await app?.close();
      });

      it.each(['object', 'boolean', 'nan', 'infinity', 'symbol'])('refuses a request whose key is a %s, with a 500 and an error naming the route', async (kind) => {
        const http = request(app.getHttpServer());
        for (let i = 0; i < 3; i++) await http.get(path).set('x-answer', kind).expect(500);
        const route = async ? 'UserCodeController.asyncKeyed' : 'UserCodeController.keyed';
        expect(errors).toHaveLength(3);
        for (const message of errors) expect(message).toBe(`Rate limit key resolver failed on ${route}; the request was refused.`);
        // nobody was charged for it: a real client still has its whole budget
        expect(remaining(await http.get(path).set('x-answer', 'string').expect(200))).toBe(1);
      });

      it('counts a finite number as an identity of its own, and empty answers as the client IP', async () => {
        const http = request(app.getHttpServer());
        expect(remaining(await http.get(path).set('x-answer', 'number').expect(200))).toBe(1);
        expect(remaining(await http.get(path).set('x-answer', 'number').expect(200))).toBe(0);
        await http.get(path).set('x-answer', 'number').expect(429);
        expect(remaining(await http.get(path).set('x-answer', 'other-number').expect(200))).toBe(1);
        expect(remaining(await http.get(path).set('x-answer', 'empty').expect(200))).toBe(1);
        expect(remaining(await http.get(path).set('x-answer', 'null').expect(200))).toBe(0); // same IP
        expect(errors).toEqual([]);
      });
    });
  });

  describe('a skip() that throws', () => {
    @Controller()
    class QuoteController {
      @Get('quote')
      @RateLimit('5/minute')
      quote() {
        return { ok: true };
      }
    }

    let app: INestApplication | undefined;
    afterEach(async () => {
      jest.restoreAllMocks();
      await app?.close();
    });

    it.each([
      ['throws', () => { throw new Error('feature flags unavailable'); }],
      ['rejects', () => Promise.reject(new Error('feature flags unavailable'))],
    ])('%s: the request fails with a 500 and a logged error naming the route', async (_, skip) => {
      const errors: [string, string][] = [];
      jest.spyOn(Logger.prototype, 'error').mockImplementation((message: unknown, stack: unknown) => void errors.push([String(message), String(stack)]));
      app = await createScenarioApp([QuoteController], { skip: skip as unknown as () => boolean }, { platform });
      const response = await request(app.getHttpServer()).get('/quote').expect(500);
      expect(response.body).toEqual({ statusCode: 500, message: 'Internal Server Error' });
      expect(errors).toHaveLength(1);
      expect(errors[0][0]).toBe('Rate limit skip function failed on QuoteController.quote; the request was refused.');
      expect(errors[0][1]).toContain('feature flags unavailable');
    });
  });

  describe('resolver classes are built when the application starts', () => {
    @Injectable()
    class TenantDirectory {
      tenantOf(apiKey: string | undefined) {
        return apiKey ? `tenant-${apiKey.slice(0, 3)}` : undefined;
      }
    }

    /** Injects a service of the app's own: listed in providers, next to it. */
    @Injectable()
    class TenantKeyResolver implements RateLimitKeyResolver {
      static built = 0;
      constructor(private readonly directory: TenantDirectory) {
        TenantKeyResolver.built++;
      }
      resolve(context: ExecutionContext) {
        return this.directory.tenantOf(header(context, 'x-api-key'));
      }
    }

    /** No dependencies: needs no listing. */
    class PlainKeyResolver implements RateLimitKeyResolver {
      resolve(context: ExecutionContext) {
        return header(context, 'x-user');
      }
    }

    @Controller()
    class TenantController {
      @Get('tenant')
      @RateLimit('2/minute', { key: TenantKeyResolver })
      tenant() {
        return { ok: true };
      }

      @Get('also-tenant')
      @RateLimit('2/minute', { key: TenantKeyResolver })
      alsoTenant() {
        return { ok: true };
      }

      @Get('plain')
      @RateLimit('2/minute', { key: PlainKeyResolver })
      plain() {
        return { ok: true };
      }
    }

    @Controller()
    class BrokenController {
      @Get('broken')
      @RateLimit('2/minute', { key: TenantKeyResolver })
      broken() {
        return { ok: true };
      }
    }

    let app: INestApplication | undefined;
    afterEach(async () => {
      await app?.close();
      app = undefined;
    });

    it('uses a listed resolver, with its dependencies, from DI, and builds an unlisted one without dependencies', async () => {
      TenantKeyResolver.built = 0;
      app = await createScenarioApp([TenantController], {}, { providers: [TenantDirectory, TenantKeyResolver], platform });
      expect(TenantKeyResolver.built).toBe(1); // before any request, and once for both routes
      const http = request(app.getHttpServer());
      expect(remaining(await http.get('/tenant').set('x-api-key', 'abc-1').expect(200))).toBe(1);
      expect(remaining(await http.get('/tenant').set('x-api-key', 'abc-2').expect(200))).toBe(0); // same tenant
      expect(remaining(await http.get('/tenant').set('x-api-key', 'xyz-1').expect(200))).toBe(1);
      expect(remaining(await http.get('/plain').set('x-user', 'u1').expect(200))).toBe(1);
      expect(remaining(await http.get('/plain').set('x-user', 'u2').expect(200))).toBe(1);
      expect(TenantKeyResolver.built).toBe(1);
    });

    it('stops start-up, naming the resolver and the route, when a resolver cannot be built', async () => {
      const starting = createScenarioApp([BrokenController], {}, { platform });
      await expect(starting).rejects.toThrow(/cannot build the key resolver TenantKeyResolver for route BrokenController\.broken/);
      await expect(starting).rejects.toThrow(/list TenantKeyResolver in the `providers` of a module that can see them/);
    });

    it("stops start-up when the module's own key resolver cannot be built", async () => {
      await expect(createScenarioApp([], { key: TenantKeyResolver }, { platform })).rejects.toThrow(
        /cannot build the key resolver TenantKeyResolver for the module option `key`/,
      );
    });
  });

  describe('policy names in one response', () => {
    @Controller()
    class DefaultBucketController {
      @Get('named-default')
      @RateLimit('10/minute', { bucket: 'default' })
      namedDefault() {
        return { ok: true };
      }
    }

    it("stay unique when a route's bucket is named like the module's default limit", async () => {
      const app = await createScenarioApp([DefaultBucketController], { defaultLimit: '100/hour' }, { platform });
      try {
        const response = await request(app.getHttpServer()).get('/named-default').expect(200);
        expect(response.headers['ratelimit-policy']).toBe('"default";q=10;w=60, "default-2";q=100;w=3600');
        expect(response.headers['ratelimit']).toBe('"default";r=9;t=' + response.headers['ratelimit'].split(';t=')[1]);
      } finally {
        await app.close();
      }
    });
  });
});
