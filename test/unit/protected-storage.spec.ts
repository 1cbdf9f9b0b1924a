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
});
