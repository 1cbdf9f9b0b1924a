import type { RateLimitResult } from '../storage/rate-limit-decision.js';
import type { ConcurrencyDecision } from '../concurrency/concurrency-decision.js';
import type { RateLimitCheck, RateLimitStorage, StorageDeadline } from '../storage/rate-limit-storage.interface.js';
import { isPromiseLike, type MaybePromise } from '../utils/maybe-async.js';
import type { CircuitBreaker } from './circuit-breaker.js';
import { StorageUnavailableError } from './storage-unavailable.error.js';
import { CheckFailedError } from '../storage/check-failed.error.js';
import { LateOperationError } from '../storage/late-operation.error.js';
import { MemoryStorage } from '../storage/memory.storage.js';
import { ThrottledLogger } from './throttled-logger.js';

/** A call waiting for the storage's answer; the storage sees it as the call's deadline. */
interface WaitingCall extends StorageDeadline {
  /** When it was made. */
  readonly calledAt: number;
  /** Start of its current waiting period: a sign of life from the storage starts another. */
  since: number;
  /** How many answers the storage had given when that period began. */
  answersSince: number;
  settled: boolean;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

const settledNothing = () => undefined;
const fail = (error: Error): never => {
  throw error;
};

/**
 * Bounds every storage call: a deadline on asynchronous answers and a circuit breaker in front.
 * Whatever goes wrong surfaces as one {@link StorageUnavailableError}, for the failure policy.
 * Synchronous storages pass straight through.
 *
 * A failure reported must never take effect later. Each call carries its deadline to the
 * storage (a {@link StorageDeadline}); one that holds the store to it (RedisStorage: the script
 * does nothing past it) says when it sent the call, and the call fails `timeoutMs` after that,
 * plus a short grace for an answer already on its way. Until then the store may still answer;
 * after it, it can no longer act. Time spent before sending (a long turn of the event loop)
 * does not count.
 *
 * For a storage that holds nothing to a deadline, the deadline means "no sign of life": a call
 * times out after `timeoutMs` unless the storage answered other calls during that time, or
 * unless this process itself ran so late that it could not have read an answer: both show the
 * delay is our own (a burst of requests, a starved CPU), not the storage's, so it waits another
 * period, up to a hard cap. Failing open on a burst would let the burst through uncounted.
 *
 * An admitted check whose answer still comes after its call failed has its charge given back
 * (`refund`), if the storage can.
 */
export class ProtectedStorage {
  /** Answers the storage has given so far: proof of life for calls still waiting (cheaper than a clock). */
  private answers = 0;
  /**
   * Calls waiting for an answer, oldest first, from index `first`: one timer watches them all
   * (a timer per call cost more than the rest of a Redis check on this side).
   */
  private readonly waiting: WaitingCall[] = [];
  private first = 0;
  private watchdog?: ReturnType<typeof setTimeout>;
  private readonly maxWaitMs: number;
  /** How long past its deadline a call still waits for an answer already on its way. */
  private readonly graceMs: number;
  private readonly lateLog = new ThrottledLogger('ProtectedStorage');
  private readonly synchronous: boolean;

  constructor(
    private readonly storage: RateLimitStorage,
    private readonly timeoutMs: number,
    readonly breaker: CircuitBreaker,
  ) {
    this.maxWaitMs = Math.max(1_000, 10 * timeoutMs);
    this.graceMs = Math.max(5, timeoutMs / 5);
    this.synchronous = storage instanceof MemoryStorage;
  }

  check(checks: readonly RateLimitCheck[], cost: number): MaybePromise<RateLimitResult> {
    // A known denial holds during an outage too, and is no sign of the storage's health.
    const known = this.storage.cachedDenial?.(checks, cost);
    if (known !== undefined) return known;
    if (!this.breaker.allow()) return this.storage.cachedDenial?.(checks, cost, true) ?? fail(new StorageUnavailableError('circuit-open'));
    // memory storage answers at once: no deadline to hand it, nothing allocated for one
    const call = this.synchronous ? undefined : this.newCall();
    let answer: MaybePromise<RateLimitResult>;
    try {
      answer = this.storage.check(checks, cost, call);
    } catch (error) {
      if (error instanceof CheckFailedError) this.breaker.success();
      else this.breaker.failure();
      throw new StorageUnavailableError('error', error);
    }
    if (!isPromiseLike(answer)) {
      this.breaker.success();
      return answer;
    }
    return this.wait(call ?? this.newCall(), answer, (late) => this.undoLateCharge(checks, cost, late));
  }

  private newCall(): WaitingCall {
    const calledAt = performance.now();
    return { timeoutMs: this.timeoutMs, calledAt, since: calledAt, answersSince: this.answers, settled: false, resolve: settledNothing, reject: settledNothing };
  }

  private wait<T>(call: WaitingCall, answer: Promise<T>, onLate?: (late: T) => void): Promise<T> {
    const promise = new Promise<T>((resolve, reject) => {
      call.resolve = resolve as (value: unknown) => void;
      call.reject = reject;
    });
    this.waiting.push(call);
    if (this.watchdog === undefined) this.watch(this.timeoutMs);
    answer.then(
      (result) => {
        this.answers++;
        if (!this.settle(call)) return onLate?.(result);
        this.breaker.success();
        call.resolve(result);
      },
      (error: unknown) => {
        // a check that failed on its own came with an answer: the storage is up
        const answered = error instanceof CheckFailedError;
        if (answered) this.answers++;
        if (!this.settle(call)) return;
        if (answered) this.breaker.success();
        else this.breaker.failure();
        call.reject(new StorageUnavailableError(error instanceof LateOperationError ? 'timeout' : 'error', error));
      },
    );
    return promise;
  }

  /**
   * An admitted check answered after its call was reported failed: the store ran it before its
   * deadline, but the answer took longer than the grace to arrive. Its charge goes back at once.
   */
  private undoLateCharge(checks: readonly RateLimitCheck[], cost: number, late: RateLimitResult): void {
    if (!late.allowed) return;
    const { refund } = this.storage;
    const undone = refund !== undefined && late.chargedAt !== undefined;
    this.lateLog.warn(
      `A rate-limit check was answered after it had been reported failed; ${undone ? 'its charge is given back' : 'the storage cannot give its charge back (no refund())'}`,
    );
    if (!undone) return;
    try {
      const done = refund.call(this.storage, checks, cost, late.chargedAt!);
      if (isPromiseLike(done)) done.then(undefined, settledNothing);
    } catch {
      // logged above; the charge then expires with its window
    }
  }

  /** Marks a call settled; false if it already was (timed out). */
  private settle(call: WaitingCall): boolean {
    if (call.settled) return false;
    call.settled = true;
    this.dropSettled();
    return true;
  }

  /** Answers mostly come in order: the settled calls at the front leave the queue. */
  private dropSettled(): void {
    const { waiting } = this;
    let first = this.first;
    while (first < waiting.length && waiting[first].settled) first++;
    if (first === waiting.length) {
      waiting.length = 0;
      first = 0;
    } else if (first >= 1_024 && first * 2 >= waiting.length) {
      waiting.splice(0, first);
      first = 0;
    }
    this.first = first;
  }

  private watch(delayMs: number): void {
    this.watchdog = setTimeout(this.onWatchdog, delayMs);
    // it waits for answers: the sockets they come on keep the process alive, not this timer
    this.watchdog.unref?.();
  }

  // A busy loop runs due timers before it reads sockets; I/O is polled before setImmediate, so a
  // reply that already arrived is seen before a call is declared late.
  private readonly onWatchdog = () => setImmediate(this.expireLate);

  /**
   * Fails the calls past their deadline, unless the delay is ours rather than the storage's: it
   * answered other calls during the call's last period, or this process got the CPU so late that
   * it could not have read an answer anyway. Then the call waits another period, up to a hard cap.
   */
  private readonly expireLate = () => {
    this.watchdog = undefined;
    const now = performance.now();
    const { timeoutMs } = this;
    let nextDue = Infinity;
    for (let i = this.first; i < this.waiting.length; i++) {
      const call = this.waiting[i];
      if (call.settled) continue;
      if (call.sentAt !== undefined) {
        // the store does nothing with it past sentAt + timeoutMs: after that, and the grace, it failed
        const due = call.sentAt + timeoutMs + this.graceMs;
        if (now < due) {
          nextDue = Math.min(nextDue, due);
          continue;
        }
      } else if (now - call.since < timeoutMs) {
        nextDue = Math.min(nextDue, call.since + timeoutMs);
        continue;
      }
      const alive = this.answers > call.answersSince;
      const starved = now - call.since > timeoutMs * 1.5;
      if (call.sentAt === undefined && (alive || starved) && now - call.calledAt < this.maxWaitMs) {
        call.since = now;
        call.answersSince = this.answers;
        nextDue = Math.min(nextDue, now + timeoutMs);
        continue;
      }
      call.settled = true;
      this.breaker.failure();
      call.reject(new StorageUnavailableError('timeout'));
    }
    this.dropSettled();
    if (nextDue !== Infinity) this.watch(Math.max(1, nextDue - now));
  };

  /**
   * A concurrency slot (`@ConcurrencyLimit`), under the same deadline and circuit breaker as
   * checks. The storage must have `acquire` (the module checks at start-up).
   */
  acquire(key: string, limit: number, leaseMs: number, leaseId: string): MaybePromise<ConcurrencyDecision> {
    return this.call((deadline) => this.storage.acquire!(key, limit, leaseMs, leaseId, deadline));
  }

  /**
   * Any other storage call (RateLimitService, refunds), under the same deadline and circuit
   * breaker. `check` keeps its own copy of these steps: every request runs it, and a closure per
   * request is what it avoids.
   */
  call<T>(operation: (deadline: StorageDeadline) => MaybePromise<T>, what = 'A rate-limit storage operation'): MaybePromise<T> {
    if (!this.breaker.allow()) throw new StorageUnavailableError('circuit-open');
    const call = this.newCall();
    let answer: MaybePromise<T>;
    try {
      answer = operation(call);
    } catch (error) {
      this.breaker.failure();
      throw new StorageUnavailableError('error', error);
    }
    if (!isPromiseLike(answer)) {
      this.breaker.success();
      return answer;
    }
    // a storage that held it to its deadline cannot have acted on it this late, but for an answer
    // slower than the grace; one that did not may well have
    return this.wait(call, answer, () => this.lateLog.warn(`${what} took effect after it had been reported failed`));
  }
}
