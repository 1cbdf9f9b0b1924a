import type { RateLimitResult } from '../storage/rate-limit-decision.js';
import type { ConcurrencyDecision } from '../concurrency/concurrency-decision.js';
import type { RateLimitCheck, RateLimitStorage } from '../storage/rate-limit-storage.interface.js';
import { isPromiseLike, type MaybePromise } from '../utils/maybe-async.js';
import type { CircuitBreaker } from './circuit-breaker.js';
import { StorageUnavailableError } from './storage-unavailable.error.js';
import { CheckFailedError } from '../storage/check-failed.error.js';

/**
 * Bounds every storage call: a deadline on asynchronous answers and a circuit breaker in front.
 * Whatever goes wrong surfaces as one {@link StorageUnavailableError}, for the failure policy.
 * Synchronous storages pass straight through.
 *
 * The deadline means "no sign of life": a call times out after `timeoutMs` unless the storage
 * answered other calls during that time, or unless this process itself ran so late that it could
 * not have read an answer: both show the delay is our own (a burst of requests, a starved CPU),
 * not the storage's, so it waits another period, up to a hard cap. Failing open on a burst would
 * let the burst through uncounted.
 */
export class ProtectedStorage {
  /** When the storage last answered (performance.now()): proof of life for calls still waiting. */
  private lastAnswerAt = -Infinity;
  private readonly maxWaitMs: number;

  constructor(
    private readonly storage: RateLimitStorage,
    private readonly timeoutMs: number,
    readonly breaker: CircuitBreaker,
  ) {
    this.maxWaitMs = Math.max(1_000, 10 * timeoutMs);
  }

  check(checks: readonly RateLimitCheck[], cost: number): MaybePromise<RateLimitResult> {
    // A known denial holds during an outage too, and is no sign of the storage's health.
    const known = this.storage.cachedDenial?.(checks, cost);
    if (known !== undefined) return known;
    if (!this.breaker.allow()) throw new StorageUnavailableError('circuit-open');
    let answer: MaybePromise<RateLimitResult>;
    try {
      answer = this.storage.check(checks, cost);
    } catch (error) {
      if (error instanceof CheckFailedError) this.breaker.success();
      else this.breaker.failure();
      throw new StorageUnavailableError('error', error);
    }
    if (!isPromiseLike(answer)) {
      this.breaker.success();
      return answer;
    }
    return this.withDeadline(answer);
  }

  private withDeadline<T>(answer: Promise<T>): Promise<T> {
    const sentAt = performance.now();
    return new Promise((resolve, reject) => {
      let settled = false;
      let timer: ReturnType<typeof setTimeout>;
      let since = sentAt;
      const expire = () => {
        if (settled) return;
        const now = performance.now();
        // Keep waiting, up to a hard cap, while the delay is ours rather than the storage's: it
        // answered other calls during the last period, or this process got the CPU so late that
        // it could not have read an answer anyway.
        const alive = this.lastAnswerAt > since;
        const starved = now - since > this.timeoutMs * 1.5;
        if ((alive || starved) && now - sentAt < this.maxWaitMs) {
          since = now;
          timer = setTimeout(onTimer, this.timeoutMs);
          return;
        }
        settled = true;
        this.breaker.failure();
        reject(new StorageUnavailableError('timeout'));
      };
      // A busy loop runs due timers before it reads sockets; I/O is polled before setImmediate,
      // so a reply that already arrived is seen before the call is declared late.
      const onTimer = () => setImmediate(expire);
      // Node keeps one list per timeout length, so this is an O(1) insert, not a timer per key.
      timer = setTimeout(onTimer, this.timeoutMs);
      answer.then(
        (result) => {
          clearTimeout(timer);
          this.lastAnswerAt = performance.now();
          if (settled) return;
          settled = true;
          this.breaker.success();
          resolve(result);
        },
        (error: unknown) => {
          clearTimeout(timer);
          // a check that failed on its own came with an answer: the storage is up
          const answered = error instanceof CheckFailedError;
          if (answered) this.lastAnswerAt = performance.now();
          if (settled) return;
          settled = true;
          if (answered) this.breaker.success();
          else this.breaker.failure();
          reject(new StorageUnavailableError('error', error));
        },
      );
    });
  }

  /**
   * A concurrency slot (`@ConcurrencyLimit`), under the same deadline and circuit breaker as
   * checks. The storage must have `acquire` (the module checks at start-up).
   */
  acquire(key: string, limit: number, leaseMs: number, leaseId: string): MaybePromise<ConcurrencyDecision> {
    return this.call(() => this.storage.acquire!(key, limit, leaseMs, leaseId));
  }

  /**
   * Any other storage call (RateLimitService, refunds), under the same deadline and circuit
   * breaker. `check` keeps its own copy of these steps: every request runs it, and a closure per
   * request is what it avoids.
   */
  call<T>(operation: () => MaybePromise<T>): MaybePromise<T> {
    if (!this.breaker.allow()) throw new StorageUnavailableError('circuit-open');
    let answer: MaybePromise<T>;
    try {
      answer = operation();
    } catch (error) {
      this.breaker.failure();
      throw new StorageUnavailableError('error', error);
    }
    if (!isPromiseLike(answer)) {
      this.breaker.success();
      return answer;
    }
    return this.withDeadline(answer);
  }
}
