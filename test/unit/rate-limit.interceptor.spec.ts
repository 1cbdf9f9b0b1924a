import 'reflect-metadata';
import { jest } from '@jest/globals';
import type { CallHandler } from '@nestjs/common';
import { ModuleRef, Reflector } from '@nestjs/core';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host.js';
import { interval, NEVER, Observable, of, Subject, throwError, type Subscription } from 'rxjs';
import { ConcurrencyLimit, MemoryStorage } from '../../lib/index.js';
import { RateLimitInterceptor } from '../../lib/interceptors/rate-limit.interceptor.js';
import { whenFinished } from '../../lib/outcomes/request-outcome.js';
import { resolveConfig } from '../../lib/rate-limit.config.js';
import { RoutePlanner } from '../../lib/rules/route-planner.js';

const LEASE_MS = 5_000;

class Messages {
  @ConcurrencyLimit(1, { key: () => 'client', leaseMs: LEASE_MS })
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

  it('holds the slot of a handler its subscriber left (a client gone) until the handler answers, then releases it once', () => {
    const { storage, call } = setup();
    const answer = new Subject<string>(); // a promise still running: unsubscribing does not stop it
    const running = call('limited', answer);
    const subscription: Subscription = running.run().subscribe();
    subscription.unsubscribe();
    subscription.unsubscribe();
    // the work goes on: the slot is still held, and nothing is reported yet
    expect(() => call('limited', of('second')).run()).toThrow('Rate limit exceeded');
    expect(storage.releases).toBe(0);
    expect(running.outcomes).toEqual([]);
    answer.next('done late');
    expect(storage.releases).toBe(1);
    expect(running.outcomes).toEqual([false]); // it succeeded, though nobody read it
    expect(answer.observed).toBe(false); // and is torn down once it has answered
    const again = call('limited', of('third'));
    again.run().subscribe();
    expect(again.outcomes).toEqual([false]);
  });

  it('releases at once a stream torn down after it produced something: its work ends with it', () => {
    const { storage, call } = setup();
    const ticks = new Subject<number>();
    const streaming = call('limited', ticks);
    const subscription = streaming.run().subscribe();
    ticks.next(1);
    expect(storage.releases).toBe(0);
    subscription.unsubscribe();
    expect(storage.releases).toBe(1);
    expect(streaming.outcomes).toEqual([false]);
    expect(ticks.observed).toBe(false);
  });

  it('gives up on a handler that never answers its departed subscriber after the lease, as a failure', () => {
    jest.useFakeTimers();
    try {
      const { storage, call } = setup();
      const hung = call('limited', NEVER);
      hung.run().subscribe().unsubscribe();
      jest.advanceTimersByTime(LEASE_MS - 1);
      expect(storage.releases).toBe(0);
      jest.advanceTimersByTime(1);
      expect(storage.releases).toBe(1);
      expect(hung.outcomes).toEqual([true]);
      // and a periodic one that its subscriber left early stops at its first value
      const periodic = call('limited', interval(1_000));
      periodic.run().subscribe().unsubscribe();
      jest.advanceTimersByTime(1_000);
      expect(storage.releases).toBe(2);
      expect(periodic.outcomes).toEqual([false]);
      expect(jest.getTimerCount()).toBe(0);
    } finally {
      jest.useRealTimers();
    }
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
