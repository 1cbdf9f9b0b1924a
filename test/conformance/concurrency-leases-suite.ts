import { MemoryStorage, type RateLimitStorage } from '../../lib/index.js';
import type { ConcurrencyLeases } from '../../lib/concurrency/concurrency-leases.js';
import type { ConcurrencyDecision } from '../../lib/concurrency/concurrency-decision.js';
import { FakeClock } from '../support/fake-clock.js';
import { closeStorage, type StorageTarget } from '../support/storage-targets.js';

const T0 = Date.UTC(2030, 0, 1);
const KEY = 'rl:{ip:203.0.113.7}:Reports.show:cc';

/** [allowed, inFlight], for compact expectations. */
const brief = (decision: ConcurrencyDecision): [boolean, number] => [decision.allowed, decision.inFlight];

/**
 * Concurrency leases (`acquire` / `release`): scripted traces with exact answers, run unchanged on
 * every storage. A storage conforms when it gives exactly these decisions and expiry times.
 * `reset` empties the backing store before each test.
 */
export function describeConcurrencyLeases(target: () => StorageTarget, reset: () => Promise<void>): void {
  let clock: FakeClock;
  let storage: RateLimitStorage;
  beforeEach(async () => {
    await reset();
    clock = new FakeClock(T0);
    storage = target().create(clock);
  });
  afterEach(() => closeStorage(storage));

  const acquire = async (id: string, limit = 2, leaseMs = 60_000, key = KEY) => brief(await storage.acquire!(key, limit, leaseMs, id));
  const release = async (id: string, key = KEY) => storage.release!(key, id);
  /** When the key's state expires: Redis's PEXPIRETIME; memory's latest lease. */
  const expiresAt = async (key = KEY): Promise<number | undefined> =>
    storage instanceof MemoryStorage
      ? (storage as unknown as { leases?: ConcurrencyLeases }).leases?.expiresAt(key)
      : target().expiresAt(storage, key);

  it('grants up to the limit, then denies; a release makes room for exactly one', async () => {
    expect(await acquire('a')).toEqual([true, 1]);
    expect(await acquire('b')).toEqual([true, 2]);
    expect(await acquire('c')).toEqual([false, 2]);
    expect(await acquire('c')).toEqual([false, 2]); // a denial takes nothing
    await release('a');
    expect(await acquire('d')).toEqual([true, 2]);
    expect(await acquire('e')).toEqual([false, 2]);
  });

  it('releases only the lease named: an unknown one, one released already, or one of another key change nothing', async () => {
    expect(await acquire('a')).toEqual([true, 1]);
    expect(await acquire('b')).toEqual([true, 2]);
    await release('nobody');
    await release('b', 'rl:{ip:203.0.113.8}:Reports.show:cc');
    expect(await acquire('c')).toEqual([false, 2]);
    await release('a');
    await release('a'); // twice: still one slot back
    expect(await acquire('c')).toEqual([true, 2]);
    expect(await acquire('d')).toEqual([false, 2]);
  });

  it('expires a lease leaseMs after it was granted, to the millisecond (an instance that died releases nothing)', async () => {
    expect(await acquire('a', 1, 1_000)).toEqual([true, 1]);
    clock.advance(999);
    expect(await acquire('b', 1, 1_000)).toEqual([false, 1]);
    clock.advance(1);
    expect(await acquire('b', 1, 1_000)).toEqual([true, 1]); // a expired: b is the only one in flight
    await release('a'); // releasing the expired lease frees nothing of b's
    expect(await acquire('c', 1, 1_000)).toEqual([false, 1]);
  });

  it('counts only live leases in flight', async () => {
    expect(await acquire('a', 3, 1_000)).toEqual([true, 1]);
    clock.advance(500);
    expect(await acquire('b', 3, 1_000)).toEqual([true, 2]);
    clock.advance(500); // a expires
    expect(await acquire('c', 3, 1_000)).toEqual([true, 2]);
    expect(await acquire('d', 3, 1_000)).toEqual([true, 3]);
    expect(await acquire('e', 3, 1_000)).toEqual([false, 3]);
  });

  it('renews a lease acquired again while held, and counts it once', async () => {
    expect(await acquire('a', 2, 1_000)).toEqual([true, 1]);
    expect(await acquire('b', 2, 1_000)).toEqual([true, 2]);
    clock.advance(500);
    expect(await acquire('a', 2, 1_000)).toEqual([true, 2]); // renewed at the limit: it holds its slot already
    expect(await expiresAt()).toBe(T0 + 1_500);
    clock.advance(600); // b expired at 1,000; a lives until 1,500
    expect(await acquire('c', 2, 1_000)).toEqual([true, 2]);
    expect(await acquire('d', 2, 1_000)).toEqual([false, 2]);
  });

  it('keeps keys apart', async () => {
    const other = 'rl:{user:42}:Reports.show:cc';
    expect(await acquire('a', 1)).toEqual([true, 1]);
    expect(await acquire('b', 1, 60_000, other)).toEqual([true, 1]);
    expect(await acquire('c', 1)).toEqual([false, 1]);
    expect(await acquire('c', 1, 60_000, other)).toEqual([false, 1]);
  });

  it('keeps a key exactly until its latest lease expires, and drops it with its last release', async () => {
    expect(await expiresAt()).toBeUndefined();
    await acquire('a', 3, 1_000);
    clock.advance(300);
    await acquire('b', 3, 5_000);
    clock.advance(100);
    await acquire('c', 3, 2_000);
    expect(await expiresAt()).toBe(T0 + 5_300);
    await release('b'); // the latest goes: the key now expires with c
    expect(await expiresAt()).toBe(T0 + 2_400);
    await release('a');
    await release('c');
    expect(await expiresAt()).toBeUndefined();
  });

  it('drops the expired leases of a key on the next acquire, so a key of expired leases alone is gone', async () => {
    await acquire('a', 2, 1_000);
    await acquire('b', 2, 1_000);
    clock.advance(1_000);
    expect(await acquire('c', 2, 500)).toEqual([true, 1]);
    expect(await expiresAt()).toBe(T0 + 1_500);
    await release('c');
    expect(await expiresAt()).toBeUndefined(); // a and b went with the acquire, c with its release
  });
}
