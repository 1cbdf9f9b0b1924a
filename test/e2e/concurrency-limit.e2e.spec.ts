import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Controller, Get, Logger, Param, Res, type ExecutionContext, type INestApplication } from '@nestjs/common';
import type { AddressInfo } from 'node:net';
import {
  ConcurrencyLimit,
  MemoryStorage,
  RateLimit,
  RedisStorage,
  SkipRateLimit,
  type RateLimitCheck,
  type RateLimitModuleOptions,
  type RateLimitStorage,
} from '../../lib/index.js';
import type { ConcurrencyDecision } from '../../lib/concurrency/concurrency-decision.js';
import { RateLimitInterceptor } from '../../lib/interceptors/rate-limit.interceptor.js';
import { routeId } from '../../lib/rules/route-id.js';
import { isPromiseLike, type MaybePromise } from '../../lib/utils/maybe-async.js';
import { FakeClock } from '../support/fake-clock.js';
import { InFlight, sendGet, type HttpAnswer } from '../support/in-flight.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, storageKinds, type HttpPlatform } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';
import { until } from '../support/until.js';

/**
 * `@ConcurrencyLimit` over HTTP, on Express and Fastify, on memory and Redis: exact counts, the
 * denial, releases (finish, error, client abort) exactly once, combined with `@RateLimit`, two
 * instances sharing Redis, and a dead instance's slots. Handlers stay in flight on promises the
 * tests resolve; time moves only on fake clocks.
 */

const flight = new InFlight();
/** The Node response under an Express response or a Fastify reply. */
const rawOf = (response: unknown) => ((response as { raw?: unknown }).raw ?? response) as { once(event: 'close', listener: () => void): unknown };

/** A handler that stays in flight until the test releases its id, then answers, or throws for ids starting with `fail`. */
async function held(id: string, response: unknown): Promise<{ id: string }> {
  flight.watchClose(id, rawOf(response));
  await flight.hold(id);
  if (id.startsWith('fail')) throw new Error(`report ${id} failed`);
  return { id };
}

/** Counts by the `x-client` header. */
const byClientHeader = (context: ExecutionContext) => context.switchToHttp().getRequest<{ headers: Record<string, string | undefined> }>().headers['x-client'];

/** A key resolver that waits for the test: the client may leave before the request gets its slot. */
async function slowKey(context: ExecutionContext): Promise<string> {
  const { id } = context.switchToHttp().getRequest<{ params: { id: string } }>().params;
  flight.watchClose(id, rawOf(context.switchToHttp().getResponse()));
  await flight.hold(`key-${id}`);
  return 'slow-client';
}

@Controller()
class ReportsController {
  @Get('report/:id')
  @ConcurrencyLimit(2)
  report(@Param('id') id: string, @Res({ passthrough: true }) response: unknown) {
    return held(id, response);
  }

  @Get('combined/:id')
  @RateLimit('1/minute')
  @ConcurrencyLimit(2, { leaseMs: 600_000 }) // outlives the rate limit's windows the test moves through
  combined(@Param('id') id: string, @Res({ passthrough: true }) response: unknown) {
    return held(id, response);
  }

  @Get('lease/:id')
  @ConcurrencyLimit(1, { leaseMs: 5_000 })
  lease(@Param('id') id: string, @Res({ passthrough: true }) response: unknown) {
    return held(id, response);
  }

  @Get('keyed/:id')
  @ConcurrencyLimit(1, { key: byClientHeader })
  keyed(@Param('id') id: string, @Res({ passthrough: true }) response: unknown) {
    return held(id, response);
  }

  @Get('export-a/:id')
  @ConcurrencyLimit(1, { bucket: 'exports' })
  exportA(@Param('id') id: string, @Res({ passthrough: true }) response: unknown) {
    return held(id, response);
  }

  @Get('export-b/:id')
  @ConcurrencyLimit(1, { bucket: 'exports' })
  exportB(@Param('id') id: string, @Res({ passthrough: true }) response: unknown) {
    return held(id, response);
  }

  @Get('slow-key/:id')
  @ConcurrencyLimit(1, { key: slowKey })
  slowKey(@Param('id') id: string) {
    flight.arrive(`handler-${id}`);
    return { id };
  }

  @Get('plain')
  plain() {
    return { ok: true };
  }

  @Get('skipped/:id')
  @SkipRateLimit()
  @ConcurrencyLimit(1)
  skipped(@Param('id') id: string, @Res({ passthrough: true }) response: unknown) {
    return held(id, response);
  }
}

/** The storage of a test, with a tally of its lease calls. */
class CountingStorage implements RateLimitStorage {
  granted = 0;
  denied = 0;
  released = 0;
  constructor(readonly inner: RateLimitStorage) {}
  check(checks: readonly RateLimitCheck[], cost: number) {
    return this.inner.check(checks, cost);
  }
  acquire(key: string, limit: number, leaseMs: number, leaseId: string): MaybePromise<ConcurrencyDecision> {
    const tally = (decision: ConcurrencyDecision) => {
      if (decision.allowed) this.granted++;
      else this.denied++;
      return decision;
    };
    const answer = this.inner.acquire!(key, limit, leaseMs, leaseId);
    return isPromiseLike(answer) ? answer.then(tally) : tally(answer);
  }
  /** Releases the storage has answered: the slot is free in Redis for every instance. */
  releasesDone = 0;
  release(key: string, leaseId: string) {
    this.released++;
    const done = this.inner.release!(key, leaseId);
    const settled = () => void this.releasesDone++;
    if (isPromiseLike(done)) done.then(settled, settled);
    else settled();
    return done;
  }
  init() {
    return this.inner.init?.();
  }
  close() {
    return this.inner.close?.();
  }
}

const CONCURRENCY_HEADERS = (name: string, limit: number) => ({
  'ratelimit-policy': `"${name}";q=${limit};qu="concurrent-requests"`,
  ratelimit: `"${name}";r=0;t=1`,
  'retry-after': '1',
});
const TOO_MANY = { statusCode: 429, error: 'Too Many Requests', message: 'Rate limit exceeded', retryAfter: 1 };

function expectDenied(answer: HttpAnswer, name: string, limit: number): void {
  expect({ status: answer.status, body: JSON.parse(answer.body) }).toEqual({ status: 429, body: TOO_MANY });
  expect(answer.headers).toMatchObject(CONCURRENCY_HEADERS(name, limit));
}

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());
afterEach(() => flight.clear());

/** An app listening on a loopback port: its port and its storage's tally. */
interface Instance {
  readonly app: INestApplication;
  readonly port: number;
  readonly storage: CountingStorage;
}

async function serve(platform: HttpPlatform, storage: RateLimitStorage, options: Omit<RateLimitModuleOptions, 'storage'> = {}): Promise<Instance> {
  const counting = new CountingStorage(storage);
  const app = await createScenarioApp([ReportsController], { ...options, storage: counting }, { platform, forceCloseConnections: true });
  await app.listen(0, '127.0.0.1');
  return { app, port: (app.getHttpServer().address() as AddressInfo).port, storage: counting };
}

describe.each(HTTP_PLATFORMS)('@ConcurrencyLimit on %s', (platform) => {
  describe.each(storageKinds(() => redis))('on $name storage', (target: StorageTarget) => {
    let clock: FakeClock;
    let instance: Instance;
    const get = (path: string, headers?: Record<string, string>) => sendGet(instance.port, path, headers);

    beforeEach(async () => {
      await redis.flush();
      clock = new FakeClock();
      instance = await serve(platform, target.create(clock));
    });
    afterEach(async () => {
      flight.clear(); // a failed test must not leave handlers holding close() up
      await instance.app.close();
    });

    it('admits exactly n requests in flight; the next gets a 429 with the concurrency-requests policy and Retry-After: 1', async () => {
      const first = get('/report/a');
      const second = get('/report/b');
      await Promise.all([flight.arrived('a'), flight.arrived('b')]);
      expectDenied(await get('/report/c').answer, 'ReportsController.report', 2);
      expectDenied(await get('/report/d').answer, 'ReportsController.report', 2);
      // the denied requests never reached the handler
      expect(await Promise.race([flight.arrived('c').then(() => 'ran'), Promise.resolve('not run')])).toBe('not run');

      flight.release('a');
      expect(await first.answer).toMatchObject({ status: 200, body: '{"id":"a"}' });
      await flight.closed('a');
      const third = get('/report/e'); // a's slot came back: exactly one more fits
      await flight.arrived('e');
      expectDenied(await get('/report/f').answer, 'ReportsController.report', 2);
      flight.release('b');
      flight.release('e');
      expect((await Promise.all([second.answer, third.answer])).map((a) => a.status)).toEqual([200, 200]);
      expect(instance.storage).toMatchObject({ granted: 3, denied: 3, released: 3 });
    });

    it('releases the slot when the handler throws', async () => {
      const failing = get('/lease/fail-1');
      await flight.arrived('fail-1');
      expectDenied(await get('/lease/x').answer, 'ReportsController.lease', 1);
      flight.release('fail-1');
      expect((await failing.answer).status).toBe(500);
      await flight.closed('fail-1');
      const next = get('/lease/y');
      await flight.arrived('y');
      flight.release('y');
      expect((await next.answer).status).toBe(200);
    });

    it('holds the slot of a client that hung up while its handler still runs, and releases it when the handler ends', async () => {
      const abandoned = get('/lease/gone');
      await flight.arrived('gone');
      abandoned.abort();
      await flight.closed('gone'); // the server saw the connection close; the handler has not returned
      // the work goes on, so the slot stays taken: a client cannot free it by hanging up
      expectDenied(await get('/lease/next').answer, 'ReportsController.lease', 1);
      expect(instance.storage.released).toBe(0);
      flight.release('gone'); // the handler ends now, into a closed response
      await until(() => instance.storage.released === 1, 'the first release');
      const next = get('/lease/later');
      await flight.arrived('later');
      flight.release('later');
      expect((await next.answer).status).toBe(200);
      await flight.closed('later');
      await until(() => instance.storage.released === 2, 'the second release');
      expect(instance.storage).toMatchObject({ granted: 2, denied: 1, released: 2 });
    });

    it('runs no handler for a client that left before it got a slot, and takes no slot for it', async () => {
      const abandoned = get('/slow-key/early');
      await flight.arrived('key-early'); // its key resolver waits
      abandoned.abort();
      await flight.closed('early');
      flight.release('key-early'); // the request goes on, on a response closed already
      const next = get('/slow-key/late');
      await flight.arrived('key-late');
      flight.release('key-late');
      expect((await next.answer).status).toBe(200);
      // nothing was done for the client that left
      expect(await Promise.race([flight.arrived('handler-early').then(() => 'ran'), Promise.resolve('not run')])).toBe('not run');
      expect(instance.storage).toMatchObject({ granted: 1, denied: 0 });
    });

    it('releases exactly once per admitted request, however it ended: n fit again afterwards, and not n + 1', async () => {
      const endings = [get('/report/done'), get('/report/fail-2')];
      await Promise.all([flight.arrived('done'), flight.arrived('fail-2')]);
      flight.release('done');
      flight.release('fail-2');
      expect((await Promise.all(endings.map((e) => e.answer))).map((a) => a.status)).toEqual([200, 500]);
      const aborted = get('/report/aborted');
      await flight.arrived('aborted');
      aborted.abort();
      await Promise.all(['done', 'fail-2', 'aborted'].map((id) => flight.closed(id)));
      flight.release('aborted'); // the handler now returns into a closed response

      const again = [get('/report/g'), get('/report/h')];
      await Promise.all([flight.arrived('g'), flight.arrived('h')]);
      expectDenied(await get('/report/i').answer, 'ReportsController.report', 2);
      flight.release('g');
      flight.release('h');
      await Promise.all([...again.map((e) => e.answer), flight.closed('g'), flight.closed('h')]);
      expect(instance.storage).toMatchObject({ granted: 5, denied: 1, released: 5 });
    });

    it('with @RateLimit on the route, a request the rate limit denies never asks for a slot', async () => {
      const first = get('/combined/a');
      await flight.arrived('a');
      const limited = await get('/combined/b').answer;
      expect(limited.status).toBe(429);
      expect(limited.headers['ratelimit-policy']).toBe('"ReportsController.combined";q=1;w=60'); // the rate limit's refusal
      expect(instance.storage).toMatchObject({ granted: 1, denied: 0 });

      clock.advance(60_000); // a new window: the rate limit admits again, and one slot of two is free
      const second = get('/combined/c');
      await flight.arrived('c');
      clock.advance(60_000);
      expectDenied(await get('/combined/d').answer, 'ReportsController.combined', 2);
      flight.release('a');
      flight.release('c');
      expect((await Promise.all([first.answer, second.answer])).map((a) => a.status)).toEqual([200, 200]);
    });

    it('counts per key like @RateLimit, and routes sharing a bucket share their slots', async () => {
      const ann = get('/keyed/ann-1', { 'x-client': 'ann' });
      await flight.arrived('ann-1');
      const bob = get('/keyed/bob-1', { 'x-client': 'bob' });
      await flight.arrived('bob-1'); // another client, its own slot
      expectDenied(await get('/keyed/ann-2', { 'x-client': 'ann' }).answer, 'ReportsController.keyed', 1);

      const exporting = get('/export-a/e1');
      await flight.arrived('e1');
      expectDenied(await get('/export-b/e2').answer, 'exports', 1);
      if (target.name === 'redis') {
        // the documented layout, <prefix>:{<identity>}:<bucket>:cc, one lease per request in flight
        const client = redis.client();
        const id = routeId('ReportsController.keyed');
        const keys = [`rl:{ann}:${id}:cc`, `rl:{bob}:${id}:cc`, 'rl:{ip:127.0.0.1}:exports:cc'];
        expect((await client.keys('*:cc')).sort()).toEqual(keys.sort());
        expect(await Promise.all(keys.map((key) => client.zcard(key)))).toEqual([1, 1, 1]);
      }
      for (const id of ['ann-1', 'bob-1', 'e1']) flight.release(id);
      expect((await Promise.all([ann.answer, bob.answer, exporting.answer])).map((a) => a.status)).toEqual([200, 200, 200]);
    });

    it('@SkipRateLimit() exempts a route from its concurrency limit too', async () => {
      const first = get('/skipped/s1');
      const second = get('/skipped/s2');
      await Promise.all([flight.arrived('s1'), flight.arrived('s2')]);
      flight.release('s1');
      flight.release('s2');
      expect((await Promise.all([first.answer, second.answer])).map((a) => a.status)).toEqual([200, 200]);
      expect(instance.storage).toMatchObject({ granted: 0, denied: 0 });
    });
  });

  describe('two app instances sharing one Redis', () => {
    const instances: Instance[] = [];
    let clock: FakeClock;
    beforeEach(async () => {
      await redis.flush();
      clock = new FakeClock();
    });
    afterEach(async () => {
      flight.clear();
      await Promise.all(instances.splice(0).map((i) => i.app.close()));
    });
    const redisOn = (url: string) => new RedisStorage({ url, clock: clock.now, blockCache: false });

    it('admit exactly n in flight between them', async () => {
      instances.push(await serve(platform, redisOn(redis.url)), await serve(platform, redisOn(redis.url)));
      const [one, two] = instances;
      const a = sendGet(one.port, '/report/a');
      await flight.arrived('a');
      const b = sendGet(two.port, '/report/b');
      await flight.arrived('b');
      expectDenied(await sendGet(one.port, '/report/c').answer, 'ReportsController.report', 2);
      expectDenied(await sendGet(two.port, '/report/c').answer, 'ReportsController.report', 2);
      flight.release('a'); // released by instance one: instance two may take it
      await Promise.all([a.answer, flight.closed('a')]);
      // the release goes on instance one's connection, d's acquire on two's: the one must be done first
      await until(() => one.storage.releasesDone === 1, "a's release answered by Redis");
      const d = sendGet(two.port, '/report/d');
      await flight.arrived('d');
      expectDenied(await sendGet(one.port, '/report/e').answer, 'ReportsController.report', 2);
      flight.release('b');
      flight.release('d');
      expect((await Promise.all([b.answer, d.answer])).map((x) => x.status)).toEqual([200, 200]);
      expect(one.storage).toMatchObject({ granted: 1, denied: 2, released: 1 });
      expect(two.storage).toMatchObject({ granted: 2, denied: 1 });
    });

    it("give a dead instance's slots back leaseMs after it took them", async () => {
      const warnings: string[] = [];
      jest.spyOn(Logger.prototype, 'warn').mockImplementation((message: unknown) => void warnings.push(String(message)));
      try {
        const doomed = await serve(platform, redisOn(redis.url));
        instances.push(await serve(platform, redisOn(redis.url)));
        const [survivor] = instances;
        const taken = sendGet(doomed.port, '/lease/doomed');
        await flight.arrived('doomed');
        // the instance loses Redis for good, as a crashed process would: it can release nothing
        (doomed.storage.inner as RedisStorage).client.disconnect();
        flight.release('doomed');
        await Promise.all([taken.answer, flight.closed('doomed')]);
        await doomed.app.close();
        expect(doomed.storage.released).toBe(1); // it tried
        expect(warnings.some((w) => w.startsWith(`Could not release a concurrency slot under key "rl:{ip:127.0.0.1}:${routeId('ReportsController.lease')}:cc"`))).toBe(true);

        expectDenied(await sendGet(survivor.port, '/lease/early').answer, 'ReportsController.lease', 1);
        clock.advance(4_999);
        expectDenied(await sendGet(survivor.port, '/lease/early').answer, 'ReportsController.lease', 1);
        clock.advance(1); // 5 s (leaseMs) after the dead instance took it
        const after = sendGet(survivor.port, '/lease/after');
        await flight.arrived('after');
        flight.release('after');
        expect((await after.answer).status).toBe(200);
      } finally {
        jest.restoreAllMocks();
      }
    });
  });

  it('answers in legacy headers when the module says so', async () => {
    const instance = await serve(platform, new MemoryStorage(), { headers: 'legacy' });
    try {
      const holding = sendGet(instance.port, '/lease/l1');
      await flight.arrived('l1');
      const denied = await sendGet(instance.port, '/lease/l2').answer;
      expect(denied.status).toBe(429);
      expect(denied.headers).toMatchObject({ 'x-ratelimit-limit': '1', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': '1', 'retry-after': '1' });
      expect(denied.headers['ratelimit-policy']).toBeUndefined();
      flight.release('l1');
      await holding.answer;
    } finally {
      flight.clear();
      await instance.app.close();
    }
  });

  describe('when the storage cannot answer', () => {
    /** Checks pass; every acquire fails, as an unreachable Redis would. */
    class BrokenLeases extends MemoryStorage {
      override acquire(): ConcurrencyDecision {
        throw new Error('connection lost');
      }
    }
    let instance: Instance | undefined;
    beforeEach(() => jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined));
    afterEach(async () => {
      jest.restoreAllMocks();
      flight.clear();
      await instance?.app.close();
      instance = undefined;
    });

    it("'allow' runs the request without a slot", async () => {
      instance = await serve(platform, new BrokenLeases(), { onStorageError: 'allow' });
      const ids = ['o1', 'o2'];
      const requests = ids.map((id) => sendGet(instance!.port, `/lease/${id}`));
      await Promise.all(ids.map((id) => flight.arrived(id))); // both in flight, over the limit of 1
      ids.forEach((id) => flight.release(id));
      expect((await Promise.all(requests.map((r) => r.answer))).map((a) => a.status)).toEqual([200, 200]);
    });

    it("'deny' answers 503 with Retry-After", async () => {
      instance = await serve(platform, new BrokenLeases(), { onStorageError: 'deny' });
      const answer = await sendGet(instance.port, '/lease/d1').answer;
      expect(answer.status).toBe(503);
      expect(answer.headers['retry-after']).toBe('1');
      expect(JSON.parse(answer.body)).toMatchObject({ statusCode: 503, message: 'Rate limiting is temporarily unavailable' });
    });

    it("'memory' keeps the limit in this instance", async () => {
      instance = await serve(platform, new BrokenLeases(), { onStorageError: 'memory' });
      const first = sendGet(instance.port, '/lease/m1');
      await flight.arrived('m1');
      expectDenied(await sendGet(instance.port, '/lease/m2').answer, 'ReportsController.lease', 1);
      flight.release('m1');
      await Promise.all([first.answer, flight.closed('m1')]);
      const next = sendGet(instance.port, '/lease/m3');
      await flight.arrived('m3');
      flight.release('m3');
      expect((await next.answer).status).toBe(200);
    });
  });
});

describe('binding', () => {
  const interceptorsOf = (handler: Function): unknown[] | undefined => Reflect.getMetadata('__interceptors__', handler);

  it('puts one interceptor on limited handlers only, replacing the one an earlier app put there', async () => {
    const apps = [
      await createScenarioApp([ReportsController], {}),
      await createScenarioApp([ReportsController], {}),
    ];
    try {
      const limited = interceptorsOf(ReportsController.prototype.report);
      expect(limited).toHaveLength(1);
      expect(limited![0]).toBeInstanceOf(RateLimitInterceptor);
      // a route with neither @ConcurrencyLimit nor a counting @RateLimit pays for nothing
      expect(interceptorsOf(ReportsController.prototype.plain)).toBeUndefined();
      expect(interceptorsOf(ReportsController.prototype.skipped)).toBeUndefined();
    } finally {
      await Promise.all(apps.map((app) => app.close()));
    }
  });

  it('refuses to start on a storage without acquire() and release(), naming the routes', async () => {
    const checksOnly: RateLimitStorage = { check: (checks, cost) => new MemoryStorage().check(checks, cost) };
    await expect(createScenarioApp([ReportsController], { storage: checksOnly })).rejects.toThrow(
      /@ConcurrencyLimit on ReportsController\.report, ReportsController\.combined, .*ReportsController\.slowKey needs a storage with acquire\(\) and release\(\)/,
    );
  });

  it('fails at definition time on bad arguments, saying what to do', () => {
    expect(() => ConcurrencyLimit(0)).toThrow('@ConcurrencyLimit needs a positive integer of at most 15 digits (requests in flight at once), got 0');
    expect(() => ConcurrencyLimit(1.5)).toThrow('got 1.5');
    expect(() => ConcurrencyLimit(10 ** 15)).toThrow('at most 15 digits');
    expect(() => ConcurrencyLimit(2, { leaseMs: 0 })).toThrow('@ConcurrencyLimit leaseMs must be a whole number of ms from 1 to 2147483647');
    expect(() => ConcurrencyLimit(2, { leaseMs: 2 ** 31 })).toThrow('make it longer than the slowest request of the route');
    expect(() => ConcurrencyLimit(2, { bucket: 'no spaces' })).toThrow('@ConcurrencyLimit bucket "no spaces" must be 1-64 characters of A-Z a-z 0-9 _ . -');
    expect(() => ConcurrencyLimit(2, { onStorageError: 'ignore' as never })).toThrow("@ConcurrencyLimit: onStorageError must be 'allow', 'deny' or 'memory'");
  });
});
