import 'reflect-metadata';
import { jest } from '@jest/globals';
import { InternalServerErrorException, Logger, type ExecutionContext } from '@nestjs/common';
import { ModuleRef, Reflector } from '@nestjs/core';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host.js';
import {
  PrefixedKeyResolver,
  RateLimit,
  RateLimitExceededException,
  RateLimitGuard,
  SkipRateLimit,
  type RateLimitCheck,
  type RateLimitModuleOptions,
  type RateLimitResult,
  type RateLimitStorage,
} from '../../lib/index.js';
import { resolveConfig } from '../../lib/rate-limit.config.js';
import { routeId } from '../../lib/rules/route-id.js';
import { RoutePlanner } from '../../lib/rules/route-planner.js';

/** Answers from a script and remembers every call. */
class FakeStorage implements RateLimitStorage {
  calls: { checks: readonly RateLimitCheck[]; cost: number }[] = [];
  deny = new Set<string>();
  async = false;

  check(checks: readonly RateLimitCheck[], cost: number): RateLimitResult | Promise<RateLimitResult> {
    this.calls.push({ checks, cost });
    const decisions = checks.map(({ rule }) => {
      const allowed = !this.deny.has(rule.name);
      return { rule, allowed, limit: rule.limit, remaining: allowed ? rule.limit - 1 : 0, retryAfterMs: allowed ? 0 : rule.windowMs / 2, resetMs: rule.windowMs };
    });
    const result = { allowed: decisions.every((d) => d.allowed), now: 1_000, decisions };
    return this.async ? Promise.resolve(result) : result;
  }
}

class Resolver {
  resolve() {
    return 'from-di';
  }
}

@RateLimit('10/minute')
class LimitedController {
  inherits() {}
  @RateLimit('2/second')
  overrides() {}
  @SkipRateLimit()
  skipped() {}
  @RateLimit('5/minute', { key: (ctx) => ctx.switchToHttp().getRequest().headers['x-user'] })
  keyed() {}
  @RateLimit('5/minute', { key: () => { throw new Error('auth service down'); } })
  broken() {}
  @RateLimit('5/minute', { key: () => Promise.reject(new Error('async auth down')) })
  brokenAsync() {}
  @RateLimit('5/minute', { key: Resolver })
  viaClass() {}
  @RateLimit((ctx) => (ctx.switchToHttp().getRequest().headers['x-plan'] === 'paid' ? '1000/minute' : ['100/minute', '5/second']))
  tiered() {}
  @RateLimit(() => 'nonsense')
  badRate() {}
  @RateLimit('1/second', { bucket: 'shared' })
  sharedA() {}
  @RateLimit('1/second', { bucket: 'shared' })
  sharedB() {}
}

@SkipRateLimit()
class SkippedController {
  plain() {}
  @SkipRateLimit(false)
  @RateLimit('3/minute')
  unskipped() {}
}

class PlainController {
  plain() {}
}

/** A resolver by value: the guard looks its clients up by `value` alone. */
class TenantResolver extends PrefixedKeyResolver {
  readonly prefix = 'tenant';
  values: string[] = [];
  value(ctx: ExecutionContext) {
    const tenant = ctx.switchToHttp().getRequest().headers['x-tenant'];
    this.values.push(tenant);
    return tenant;
  }
}
/** Overrides `resolve`: the guard must ask it, never take its value directly. */
class UppercaseTenantResolver extends TenantResolver {
  override resolve(ctx: ExecutionContext) {
    const tenant = this.value(ctx);
    return tenant ? `tenant:${tenant.toUpperCase()}` : undefined;
  }
}
const tenants = new TenantResolver();
const uppercaseTenants = new UppercaseTenantResolver();
class TenantController {
  @RateLimit('5/minute', { key: tenants })
  byValue() {}
  @RateLimit('5/minute', { key: uppercaseTenants })
  byResolve() {}
}

function setup(options: RateLimitModuleOptions = {}) {
  const storage = new FakeStorage();
  const config = resolveConfig(options);
  const moduleRef = {
    get: () => {
      throw new Error('not registered');
    },
    create: async (type: new () => unknown) => new type(),
  } as unknown as ModuleRef;
  const guard = new RateLimitGuard(config, storage, new RoutePlanner(config, new Reflector(), moduleRef));
  const run = (controller: Function, method: string, headers: Record<string, string> = {}, ip = '203.0.113.9') => {
    // a Fastify-like reply: header(name, value)
    const response = {
      headers: {} as Record<string, string>,
      header(name: string, value: string) {
        this.headers[name] = value;
      },
    };
    const request = { ip, headers };
    const context = new ExecutionContextHost([request, response], controller as never, controller.prototype[method]);
    context.setType('http');
    return { result: guard.canActivate(context), response, context };
  };
  return { storage, run, guard };
}

describe('RateLimitGuard', () => {
  it('checks a route in one synchronous storage call, with a hash-tagged key per rule', () => {
    const { storage, run } = setup();
    const { result, response } = run(LimitedController, 'inherits');
    expect(result).toBe(true); // no promise: nothing was asynchronous
    expect(storage.calls).toHaveLength(1);
    expect(storage.calls[0].cost).toBe(1);
    expect(storage.calls[0].checks.map((c) => c.key)).toEqual([`rl:{ip:203.0.113.9}:${routeId('LimitedController.inherits')}:fw1m`]);
    expect(response.headers).toEqual({
      'ratelimit-policy': '"LimitedController.inherits";q=10;w=60',
      ratelimit: '"LimitedController.inherits";r=9;t=60',
    });
  });

  it('looks a PrefixedKeyResolver client up by its value, with the same keys, and asks a subclass that overrides resolve', () => {
    const { storage, run } = setup();
    expect(run(TenantController, 'byValue', { 'x-tenant': 'acme' }).result).toBe(true);
    expect(run(TenantController, 'byValue', { 'x-tenant': 'acme' }).result).toBe(true);
    expect(storage.calls[0].checks).toBe(storage.calls[1].checks); // one cached entry per client
    expect(storage.calls[0].checks.map((c) => c.key)).toEqual([`rl:{tenant:acme}:${routeId('TenantController.byValue')}:fw1m`]);
    expect(run(TenantController, 'byValue').result).toBe(true); // no value: the client IP
    expect(storage.calls[2].checks.map((c) => c.key)).toEqual([`rl:{ip:203.0.113.9}:${routeId('TenantController.byValue')}:fw1m`]);
    expect(tenants.values).toEqual(['acme', 'acme', undefined]);

    expect(run(TenantController, 'byResolve', { 'x-tenant': 'acme' }).result).toBe(true);
    expect(storage.calls[3].checks.map((c) => c.key)).toEqual([`rl:{tenant:ACME}:${routeId('TenantController.byResolve')}:fw1m`]);
  });

  it("uses a handler's decorator instead of its controller's", () => {
    const { storage, run } = setup();
    run(LimitedController, 'overrides');
    expect(storage.calls[0].checks.map((c) => [c.rule.limit, c.rule.windowMs])).toEqual([[2, 1_000]]);
  });

  it('lets exempt routes through without calling storage, defaultLimit included', () => {
    const { storage, run } = setup({ defaultLimit: '100/minute' });
    expect(run(LimitedController, 'skipped').result).toBe(true);
    expect(run(SkippedController, 'plain').result).toBe(true);
    expect(storage.calls).toHaveLength(0);
    run(SkippedController, 'unskipped');
    expect(storage.calls).toHaveLength(1);
  });

  it('leaves undecorated routes alone unless a defaultLimit applies', () => {
    const bare = setup();
    expect(bare.run(PlainController, 'plain').result).toBe(true);
    expect(bare.storage.calls).toHaveLength(0);
    const withDefault = setup({ defaultLimit: '100/minute', keyPrefix: 'api' });
    withDefault.run(PlainController, 'plain');
    expect(withDefault.storage.calls[0].checks.map((c) => c.key)).toEqual(['api:{ip:203.0.113.9}:*:fw1m']);
  });

  it('checks route rules and defaultLimit together, in one call', () => {
    const { storage, run } = setup({ defaultLimit: ['1000/hour', '50/minute'] });
    run(LimitedController, 'overrides');
    expect(storage.calls).toHaveLength(1);
    expect(storage.calls[0].checks.map((c) => c.rule.name)).toEqual(['LimitedController.overrides', 'default-1h', 'default-1m']);
  });

  it('throws RateLimitExceededException for the denied rule that waits longest, with headers set', () => {
    const { storage, run } = setup({ defaultLimit: '100/hour', headers: 'both', errorMessage: 'Slow down' });
    storage.deny.add('LimitedController.overrides').add('default');
    let error: unknown;
    let response: { headers: Record<string, string> } | undefined;
    try {
      ({ response } = run(LimitedController, 'overrides'));
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(RateLimitExceededException);
    const exception = error as RateLimitExceededException;
    expect(exception.getStatus()).toBe(429);
    expect(exception.details.rule.name).toBe('default');
    expect(exception.details).toMatchObject({ limit: 100, remaining: 0, retryAfterMs: 1_800_000, resetMs: 3_600_000, resetAt: 3_601_000 });
    expect(exception.retryAfter).toBe(1_800);
    expect(exception.getResponse()).toEqual({ statusCode: 429, error: 'Too Many Requests', message: 'Slow down', retryAfter: 1_800 });
    expect(Object.fromEntries(exception.headers)).toMatchObject({
      ratelimit: '"default";r=0;t=1800',
      'x-ratelimit-limit': '100',
      'x-ratelimit-remaining': '0',
      'x-ratelimit-reset': '1800',
    });
    expect(response).toBeUndefined();
  });

  it('keys by the route resolver and falls back to the IP when it returns nothing', () => {
    const { storage, run } = setup();
    run(LimitedController, 'keyed', { 'x-user': 'alice' });
    run(LimitedController, 'keyed', {});
    run(LimitedController, 'keyed', { 'x-user': 'x'.repeat(10_000) });
    const keys = storage.calls.map((c) => c.checks[0].key);
    const id = routeId('LimitedController.keyed');
    expect(keys[0]).toBe(`rl:{alice}:${id}:fw1m`);
    expect(keys[1]).toBe(`rl:{ip:203.0.113.9}:${id}:fw1m`);
    expect(keys[2]).toMatch(new RegExp(`^rl:\\{#[A-Za-z0-9_-]{43}\\}:${id}:fw1m$`));
  });

  it('refuses the request with a 500 and a log when the key resolver throws or rejects', async () => {
    const { storage, run } = setup();
    const logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      expect(() => run(LimitedController, 'broken')).toThrow(InternalServerErrorException);
      await expect(run(LimitedController, 'brokenAsync').result).rejects.toBeInstanceOf(InternalServerErrorException);
      expect(storage.calls).toHaveLength(0);
      expect(logged).toHaveBeenCalledTimes(2);
      expect(String(logged.mock.calls[0][0])).toContain('key resolver failed on LimitedController.broken');
    } finally {
      logged.mockRestore();
    }
  });

  it('resolves a resolver class through DI once, then stays synchronous', async () => {
    const { storage, run } = setup();
    await run(LimitedController, 'viaClass').result;
    expect(run(LimitedController, 'viaClass').result).toBe(true);
    expect(storage.calls.map((c) => c.checks[0].key)).toEqual([
      `rl:{from-di}:${routeId('LimitedController.viaClass')}:fw1m`,
      `rl:{from-di}:${routeId('LimitedController.viaClass')}:fw1m`,
    ]);
  });

  it('parses each tier of a rate function once and reuses the rules', () => {
    const { storage, run } = setup();
    run(LimitedController, 'tiered', { 'x-plan': 'paid' });
    run(LimitedController, 'tiered');
    run(LimitedController, 'tiered');
    const [paid, free1, free2] = storage.calls.map((c) => c.checks.map((x) => x.rule));
    expect(paid.map((r) => r.limit)).toEqual([1000]);
    expect(free1.map((r) => r.name)).toEqual(['LimitedController.tiered-1m', 'LimitedController.tiered-1s']);
    expect(free2).toEqual(free1);
    expect(free2[0]).toBe(free1[0]);
  });

  it('fails a request whose rate function returns an invalid rate with a 500, not a pass', () => {
    const { run } = setup();
    const logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      expect(() => run(LimitedController, 'badRate')).toThrow(InternalServerErrorException);
      expect(String(logged.mock.calls[0][0])).toContain('rate function failed');
    } finally {
      logged.mockRestore();
    }
  });

  it('shares one budget between routes of one bucket', () => {
    const { storage, run } = setup();
    run(LimitedController, 'sharedA');
    run(LimitedController, 'sharedB');
    expect(storage.calls[0].checks[0].key).toBe(storage.calls[1].checks[0].key);
    expect(storage.calls[0].checks[0].key).toBe('rl:{ip:203.0.113.9}:shared:fw1s');
  });

  it('honours the skip option and ignores non-HTTP contexts', async () => {
    const { storage, run } = setup({ skip: (ctx: ExecutionContext) => ctx.switchToHttp().getRequest().headers['x-internal'] === '1' });
    expect(run(LimitedController, 'inherits', { 'x-internal': '1' }).result).toBe(true);
    expect(storage.calls).toHaveLength(0);
    const { run: runAsync, storage: asyncStorage } = setup({ skip: async () => false });
    expect(await runAsync(LimitedController, 'inherits').result).toBe(true);
    expect(asyncStorage.calls).toHaveLength(1);

  });

  it('never lets a limited handler through unlimited on another transport', () => {
    const { storage, guard } = setup();
    jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    // an RPC message with no client address, and no key to identify it by
    const rpc = new ExecutionContextHost([{ symbol: 'ACME' }, {}], LimitedController, LimitedController.prototype.inherits);
    rpc.setType('rpc');
    expect(() => guard.canActivate(rpc)).toThrow(InternalServerErrorException);
    // a context type no adapter serves
    const custom = new ExecutionContextHost([{}, {}], LimitedController, LimitedController.prototype.inherits);
    custom.setType('carrier-pigeon' as never);
    expect(() => guard.canActivate(custom)).toThrow(/no context adapter serves 'carrier-pigeon' contexts/);
    const exempt = new ExecutionContextHost([{}, {}], LimitedController, LimitedController.prototype.skipped);
    exempt.setType('carrier-pigeon' as never);
    expect(guard.canActivate(exempt)).toBe(true);
    expect(storage.calls).toHaveLength(0);
    jest.restoreAllMocks();
  });

  it('awaits an asynchronous storage and sends no headers when told not to', async () => {
    const { storage, run } = setup({ headers: false });
    storage.async = true;
    const { result, response } = run(LimitedController, 'inherits');
    await expect(result).resolves.toBe(true);
    expect(response.headers).toEqual({});
  });
});
