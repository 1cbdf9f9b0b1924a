import type { RateLimitResult } from '../storage/rate-limit-decision.js';
import type { RateLimitCheck, RateLimitStorage } from '../storage/rate-limit-storage.interface.js';
import { isPromiseLike, type MaybePromise } from '../utils/maybe-async.js';
import type { CircuitBreaker } from './circuit-breaker.js';
import { StorageUnavailableError } from './storage-unavailable.error.js';

/**
 * Bounds every storage call: a deadline on asynchronous answers and a circuit breaker in front.
 * Whatever goes wrong surfaces as one {@link StorageUnavailableError}, for the failure policy.
 * Synchronous storages pass straight through.
 */
export class ProtectedStorage {
  constructor(
    private readonly storage: RateLimitStorage,
    private readonly timeoutMs: number,
    readonly breaker: CircuitBreaker,
  ) {}

  check(checks: readonly RateLimitCheck[], cost: number): MaybePromise<RateLimitResult> {
    if (!this.breaker.allow()) throw new StorageUnavailableError('circuit-open');
    let answer: MaybePromise<RateLimitResult>;
    try {
      answer = this.storage.check(checks, cost);
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

  private withDeadline(answer: Promise<RateLimitResult>): Promise<RateLimitResult> {
    return new Promise((resolve, reject) => {
      // Node keeps one list per timeout length, so this is an O(1) insert, not a timer per key.
      const timer = setTimeout(() => {
        this.breaker.failure();
        reject(new StorageUnavailableError('timeout'));
      }, this.timeoutMs);
      answer.then(
        (result) => {
          clearTimeout(timer);
          this.breaker.success();
          resolve(result);
        },
        (error: unknown) => {
          clearTimeout(timer);
          this.breaker.failure();
          reject(new StorageUnavailableError('error', error));
        },
      );
    });
  }
}
