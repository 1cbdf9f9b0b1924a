import type { RateLimitResult } from '../storage/rate-limit-decision.js';
import type { RateLimitCheck, RateLimitStorage } from '../storage/rate-limit-storage.interface.js';
import { isPromiseLike, type MaybePromise } from '../utils/maybe-async.js';
import type { CircuitBreaker } from './circuit-breaker.js';
import { StorageUnavailableError } from './storage-unavailable.error.js';

/**
 * Bounds every storage call: a deadline on asynchronous answers and a circuit breaker in front.
 * Whatever goes wrong surfaces as one {@link StorageUnavailableError}, for the failure policy.
 * Synchronous storages pass straight through.
 *
 * The deadline means "no sign of life": a call times out after `timeoutMs` unless the storage
 * answered a later call meanwhile, which shows the delay is our own event loop (a burst of
 * requests), not the storage. Failing open then would let the burst through uncounted.
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
    const sentAt = performance.now();
    return new Promise((resolve, reject) => {
      let settled = false;
      let timer: ReturnType<typeof setTimeout>;
      const expire = () => {
        if (settled) return;
        // The storage answered something sent after this call: it is alive, and this answer is
        // queued behind our own busy event loop. Keep waiting, up to a hard cap.
        if (this.lastAnswerAt > sentAt && performance.now() - sentAt < this.maxWaitMs) {
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
          if (settled) return;
          settled = true;
          this.breaker.failure();
          reject(new StorageUnavailableError('error', error));
        },
      );
    });
  }
}
