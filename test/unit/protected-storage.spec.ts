import { jest } from '@jest/globals';
import { CheckFailedError, CircuitBreaker, StorageUnavailableError, type RateLimitCheck, type RateLimitResult, type RateLimitStorage } from '../../lib/index.js';
import { ProtectedStorage } from '../../lib/resilience/protected-storage.js';
import { rulesOf } from '../conformance/limiter.js';

const [rule] = rulesOf([{ rate: '3/minute', algorithm: 'fixed-window' }]);
const checks: RateLimitCheck[] = [{ key: 'k', rule }];
const denial: RateLimitResult = {
  allowed: false,
  now: 0,
  decisions: [{ rule, allowed: false, limit: 3, remaining: 0, retryAfterMs: 5_000, resetMs: 5_000 }],
};

/** A storage whose next answers the test scripts: a result, an error, or a denial it knows locally. */
class ScriptedStorage implements RateLimitStorage {
  calls = 0;
  next: () => Promise<RateLimitResult> = () => Promise.resolve(denial);
  known?: RateLimitResult;
  check(): Promise<RateLimitResult> {
    this.calls++;
    return this.next();
  }
  cachedDenial(): RateLimitResult | undefined {
    return this.known;
  }
}

describe('ProtectedStorage and the circuit breaker', () => {
  const setup = () => {
    const storage = new ScriptedStorage();
    const breaker = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 60_000 });
    return { storage, breaker, protectedStorage: new ProtectedStorage(storage, 50, breaker) };
  };

  it('does not count a check that failed on its own: the storage answered', async () => {
    const { storage, breaker, protectedStorage } = setup();
    storage.next = () => Promise.reject(new CheckFailedError('WRONGTYPE', ['k']));
    for (let i = 0; i < 10; i++) {
      await expect(protectedStorage.check(checks, 1)).rejects.toBeInstanceOf(StorageUnavailableError);
    }
    expect(breaker.isOpen).toBe(false);
    expect(storage.calls).toBe(10);
  });

  it('counts an error of the whole call', async () => {
    const { storage, breaker, protectedStorage } = setup();
    storage.next = () => Promise.reject(new Error('connection is closed'));
    for (let i = 0; i < 3; i++) await expect(protectedStorage.check(checks, 1)).rejects.toBeInstanceOf(StorageUnavailableError);
    expect(breaker.isOpen).toBe(true);
  });

  it('takes a known denial without asking the storage, and without counting it a success', async () => {
    const { storage, breaker, protectedStorage } = setup();
    storage.next = () => Promise.reject(new Error('timeout'));
    await expect(protectedStorage.check(checks, 1)).rejects.toThrow();
    await expect(protectedStorage.check(checks, 1)).rejects.toThrow();
    storage.known = denial;
    for (let i = 0; i < 5; i++) expect(protectedStorage.check(checks, 1)).toBe(denial);
    storage.known = undefined;
    // two failures, then five cache hits: the third failure still opens the circuit
    await expect(protectedStorage.check(checks, 1)).rejects.toThrow();
    expect(breaker.isOpen).toBe(true);
    expect(storage.calls).toBe(3);
  });

  it('keeps denying what it knows while the circuit is open, and refuses the rest', async () => {
    const { storage, breaker, protectedStorage } = setup();
    storage.next = () => Promise.reject(new Error('connection is closed'));
    for (let i = 0; i < 3; i++) await expect(protectedStorage.check(checks, 1)).rejects.toThrow();
    expect(breaker.isOpen).toBe(true);
    storage.known = denial;
    expect(protectedStorage.check(checks, 1)).toBe(denial);
    storage.known = undefined;
    expect(() => protectedStorage.check(checks, 1)).toThrow(expect.objectContaining({ reason: 'circuit-open' }));
    expect(storage.calls).toBe(3);
  });

  describe('deadline', () => {
    const never = () => new Promise<RateLimitResult>(() => {});

    it('fails every call the storage leaves unanswered after the timeout, watched by one timer', async () => {
      const { storage, breaker, protectedStorage } = setup();
      storage.next = never;
      const timeouts = jest.spyOn(globalThis, 'setTimeout');
      const started = performance.now();
      const calls = Array.from({ length: 50 }, () => protectedStorage.check(checks, 1) as Promise<RateLimitResult>);
      expect(timeouts).toHaveBeenCalledTimes(1);
      timeouts.mockRestore();
      const outcomes = await Promise.allSettled(calls);
      const elapsed = performance.now() - started;
      expect(outcomes.every((o) => o.status === 'rejected' && (o.reason as StorageUnavailableError).reason === 'timeout')).toBe(true);
      expect(elapsed).toBeGreaterThanOrEqual(49);
      expect(elapsed).toBeLessThan(500);
      expect(breaker.isOpen).toBe(true);
    });

    it('keeps waiting while the storage answers other calls, and fails the call once it stops', async () => {
      const { storage, protectedStorage } = setup();
      storage.next = never;
      const started = performance.now();
      const hung = (protectedStorage.check(checks, 1) as Promise<RateLimitResult>).then(
        () => 'answered',
        (error: StorageUnavailableError) => ({ reason: error.reason, after: performance.now() - started }),
      );
      // other calls are answered every 10 ms for 300 ms: the storage is alive, the delay is not its fault
      storage.next = () => Promise.resolve(denial);
      while (performance.now() - started < 300) {
        await protectedStorage.check(checks, 1);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const outcome = (await hung) as { reason: string; after: number };
      expect(outcome.reason).toBe('timeout');
      expect(outcome.after).toBeGreaterThanOrEqual(300);
      expect(outcome.after).toBeLessThan(300 + 3 * 50 + 100);
    });

    it('resolves an answer that comes before the deadline, and leaves no timer behind once idle', async () => {
      const { storage, protectedStorage } = setup();
      storage.next = () => new Promise((resolve) => setTimeout(() => resolve(denial), 20));
      // read the watchdog itself: the process-wide timer count also moves with timers earlier tests left running
      const watchdog = () => (protectedStorage as unknown as { watchdog?: unknown }).watchdog;
      await expect(protectedStorage.check(checks, 1)).resolves.toBe(denial);
      expect(watchdog()).toBeDefined();
      // the watchdog's one wake-up (due 50 ms after the call; later on a loaded machine) finds nothing to watch
      const waitedFrom = performance.now();
      while (watchdog() !== undefined && performance.now() - waitedFrom < 2_000) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(watchdog()).toBeUndefined();
    });
  });
});
