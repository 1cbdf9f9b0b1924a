import 'reflect-metadata';
import type { CallHandler } from '@nestjs/common';
import { ModuleRef, Reflector } from '@nestjs/core';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host.js';
import { NEVER, Observable, of, throwError, type Subscription } from 'rxjs';
import { ConcurrencyLimit, MemoryStorage } from '../../lib/index.js';
import { RateLimitInterceptor } from '../../lib/interceptors/rate-limit.interceptor.js';
import { whenFinished } from '../../lib/outcomes/request-outcome.js';
import { resolveConfig } from '../../lib/rate-limit.config.js';
import { RoutePlanner } from '../../lib/rules/route-planner.js';

class Messages {
  @ConcurrencyLimit(1, { key: () => 'client' })
  limited() {}
  unlimited() {}
}

/** Memory storage that counts releases. */
class CountingStorage extends MemoryStorage {
  releases = 0;
  override release(key: string, leaseId: string): void {
    this.releases++;
    super.release(key, leaseId);
  }
}

function setup() {
  const storage = new CountingStorage();
  const config = resolveConfig({});
  const planner = new RoutePlanner(config, new Reflector(), {} as ModuleRef);
  const interceptor = new RateLimitInterceptor(config, storage, planner);
  /** Runs `method` as an RPC message whose handler answers with `source`; `outcomes` receives how it ended. */
  const call = (method: 'limited' | 'unlimited', source: Observable<unknown>) => {
    const context = new ExecutionContextHost([{ message: method }, {}], Messages as never, Messages.prototype[method]);
    context.setType('rpc');
    const outcomes: boolean[] = [];
    whenFinished(context, (failed) => outcomes.push(failed));
    const next: CallHandler = { handle: () => source };
    const run = () => interceptor.intercept(context, next) as Observable<unknown>; // memory storage: no promise
    return { run, outcomes };
  };
  return { storage, call };
}

describe('RateLimitInterceptor on a non-HTTP context', () => {
  it('takes the slot synchronously on memory storage and releases it once when the handler completes', () => {
    const { storage, call } = setup();
    const { run, outcomes } = call('limited', of('answer'));
    const observable = run();
    const values: unknown[] = [];
    observable.subscribe((value) => values.push(value));
    expect(values).toEqual(['answer']);
    expect(storage.releases).toBe(1);
    expect(outcomes).toEqual([false]);
  });

  it('releases once when the handler errors', () => {
    const { storage, call } = setup();
    const { run, outcomes } = call('limited', throwError(() => new Error('boom')));
    const observable = run();
    observable.subscribe({ error: () => undefined });
    expect(storage.releases).toBe(1);
    expect(outcomes).toEqual([true]);
  });

  it('releases once when unsubscribed before the handler ended, and holds the slot until then', () => {
    const { storage, call } = setup();
    const running = call('limited', NEVER);
    const subscription: Subscription = running.run().subscribe();
    expect(() => call('limited', of('second')).run()).toThrow('Rate limit exceeded');
    expect(storage.releases).toBe(0);
    subscription.unsubscribe();
    subscription.unsubscribe();
    expect(storage.releases).toBe(1);
    expect(running.outcomes).toEqual([true]);
    const again = call('limited', of('third'));
    again.run().subscribe();
    expect(again.outcomes).toEqual([false]);
  });

  it('reports the outcome of a handler without a concurrency limit, taking no slot', () => {
    const { storage, call } = setup();
    const { run, outcomes } = call('unlimited', throwError(() => new Error('boom')));
    const observable = run();
    observable.subscribe({ error: () => undefined });
    expect(outcomes).toEqual([true]);
    expect(storage.releases).toBe(0);
  });

  it('reports a refused request as failed', () => {
    const { call } = setup();
    call('limited', NEVER).run().subscribe();
    const refused = call('limited', of('x'));
    expect(() => refused.run()).toThrow('Rate limit exceeded');
    expect(refused.outcomes).toEqual([true]);
  });
});
