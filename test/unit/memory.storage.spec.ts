import { MemoryStorage, type RateLimitCheck, type RateLimitRule } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';

const rule = (limit: number, windowMs: number, name = `r${limit}/${windowMs}`): RateLimitRule => ({
  name,
  text: `${limit}/${windowMs}ms`,
  limit,
  windowMs,
  algorithm: 'fixed-window',
  burst: limit,
  capacity: limit,
  keySuffix: `t:fw${windowMs}`,
  blockMs: 0,
  count: 'all',
});
const check = (key: string, r: RateLimitRule): RateLimitCheck => ({ key, rule: r });

describe('MemoryStorage (fixed window)', () => {
  it('counts within an aligned window and resets when the window ends, without sleeping', () => {
    const clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 50)); // 10 s before a minute boundary
    const storage = new MemoryStorage({ clock: clock.now });
    const minute = rule(3, 60_000);
    const remaining = [1, 2, 3, 4].map(() => storage.check([check('k', minute)], 1).decisions[0]);
    expect(remaining.map((d) => [d.allowed, d.remaining])).toEqual([
      [true, 2],
      [true, 1],
      [true, 0],
      [false, 0],
    ]);
    expect(remaining[3].retryAfterMs).toBe(10_000);
    expect(remaining[0].resetMs).toBe(10_000);
    clock.advance(9_999);
    expect(storage.check([check('k', minute)], 1).allowed).toBe(false);
    clock.advance(1);
    const fresh = storage.check([check('k', minute)], 1);
    expect(fresh.allowed).toBe(true);
    expect(fresh.decisions[0].remaining).toBe(2);
    expect(fresh.decisions[0].resetMs).toBe(60_000);
  });

  it('is all or nothing: a denied check charges none of its rules', () => {
    const clock = new FakeClock();
    const storage = new MemoryStorage({ clock: clock.now });
    const wide = rule(10, 60_000);
    const narrow = rule(1, 1_000);
    expect(storage.check([check('a', wide), check('b', narrow)], 1).allowed).toBe(true);
    const denied = storage.check([check('a', wide), check('b', narrow)], 1);
    expect(denied.allowed).toBe(false);
    expect(denied.decisions.map((d) => [d.allowed, d.remaining, d.retryAfterMs > 0])).toEqual([
      [true, 9, false], // would have passed, so it reports the quota it still has
      [false, 0, true],
    ]);
    // the wide rule was not charged by the denied request
    expect(storage.check([check('a', wide)], 1).decisions[0].remaining).toBe(8);
  });

  it('keeps separate keys separate', () => {
    const storage = new MemoryStorage({ clock: new FakeClock().now });
    const one = rule(1, 60_000);
    expect(storage.check([check('x', one)], 1).allowed).toBe(true);
    expect(storage.check([check('y', one)], 1).allowed).toBe(true);
    expect(storage.check([check('x', one)], 1).allowed).toBe(false);
  });

  it('never holds more than maxKeys, evicting the least recently charged key', () => {
    const storage = new MemoryStorage({ clock: new FakeClock().now, maxKeys: 100 });
    const r = rule(1, 60_000);
    for (let i = 0; i < 10_000; i++) storage.check([check(`flood-${i}`, r)], 1);
    expect(storage.size).toBe(100);
    // the newest keys survive: still limited
    expect(storage.check([check('flood-9999', r)], 1).allowed).toBe(false);
    // the oldest was evicted: its state is gone
    expect(storage.check([check('flood-0', r)], 1).allowed).toBe(true);
  });

  it('reclaims expired entries as checks go by, after a short grace, with no timer', () => {
    const clock = new FakeClock();
    const storage = new MemoryStorage({ clock: clock.now });
    const second = rule(5, 1_000);
    for (let i = 0; i < 500; i++) storage.check([check(`idle-${i}`, second)], 1);
    expect(storage.size).toBe(500);
    clock.advance(2_000); // expired, but within the grace: a returning client keeps its slot
    for (let i = 0; i < 300; i++) storage.check([check('busy', second)], 1);
    expect(storage.size).toBe(501);
    expect(storage.check([check('idle-7', second)], 1).decisions[0].remaining).toBe(4); // reads as new
    clock.advance(5_000);
    for (let i = 0; i < 300; i++) storage.check([check('busy', second)], 1);
    expect(storage.size).toBeLessThanOrEqual(2);
    storage.reclaim(clock.now() + 10_000);
    expect(storage.size).toBe(0);
  });

  it('finds a key again by its check\'s hint, and never trusts a hint whose slot now holds another key', () => {
    const storage = new MemoryStorage({ clock: new FakeClock().now, maxKeys: 1 });
    const r = rule(2, 60_000);
    const a: RateLimitCheck = { key: 'a', rule: r, hint: -1 };
    expect(storage.check([a], 1).decisions[0].remaining).toBe(1);
    const slot = a.hint!;
    expect(slot).toBeGreaterThanOrEqual(0);
    expect(storage.check([a], 1).decisions[0].remaining).toBe(0); // found by the hint
    // 'a' is evicted and 'b' takes its slot: the hint now points at b's state
    const b: RateLimitCheck = { key: 'b', rule: r, hint: -1 };
    expect(storage.check([b], 1).allowed).toBe(true);
    expect(b.hint).toBe(slot);
    expect(a.hint).toBe(slot);
    const again = storage.check([a], 1);
    expect(again.decisions[0].remaining).toBe(1); // a fresh 'a', not b's count
    // and 'b' (evicted in turn) does not see a's state either
    expect(storage.check([b], 1).decisions[0].remaining).toBe(1);
  });

  it('keeps one hint right for two storages that see the same check', () => {
    const first = new MemoryStorage({ clock: new FakeClock().now });
    const second = new MemoryStorage({ clock: new FakeClock().now });
    const r = rule(3, 60_000);
    for (let i = 0; i < 5; i++) second.check([{ key: `other-${i}`, rule: r }], 1); // different slots in each
    const shared: RateLimitCheck = { key: 'shared', rule: r, hint: -1 };
    const remaining = [first, second, first, second, first].map((storage) => storage.check([shared], 1).decisions[0].remaining);
    expect(remaining).toEqual([2, 2, 1, 1, 0]);
  });

  it('rejects a maxKeys that is not a positive integer', () => {
    expect(() => new MemoryStorage({ maxKeys: 0 })).toThrow(/maxKeys must be a positive integer/);
    expect(() => new MemoryStorage({ maxKeys: 1.5 })).toThrow(/maxKeys/);
  });
});

describe('MemoryStorage with the limit advisor', () => {
  it("keeps every key's state when the first observed check makes room for attempts beside it, and counts them apart", () => {
    const clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 5));
    const storage = new MemoryStorage({ clock: clock.now });
    const plain = rule(3, 60_000);
    const observed: RateLimitRule = { ...rule(2, 60_000, 'observed'), keySuffix: 't:obs', observed: true };
    // 2,000 keys: past the first 1,024 slots, so the layout grows before it is changed
    for (let i = 0; i < 2_000; i++) storage.check([check(`k${i}`, plain)], 2);
    const first = storage.check([check('client', observed)], 1).decisions[0];
    expect([first.allowed, first.attempts]).toEqual([true, 1]);
    // every plain key kept its count through the change: one unit left, then refused
    for (const i of [0, 1_023, 1_024, 1_999]) {
      expect(storage.check([check(`k${i}`, plain)], 1).decisions[0]).toMatchObject({ allowed: true, remaining: 0 });
      expect(storage.check([check(`k${i}`, plain)], 1).allowed).toBe(false);
    }
    // attempts count refused ones too, and start again with the window
    const attempts = [2, 3, 4].map(() => storage.check([check('client', observed)], 1).decisions[0]);
    expect(attempts.map((d) => [d.allowed, d.attempts])).toEqual([[true, 2], [false, 3], [false, 4]]);
    // and keys added after the change grow the new layout with their state intact
    for (let i = 2_000; i < 5_000; i++) storage.check([check(`k${i}`, plain)], 3);
    expect(storage.check([check('k4999', plain)], 1).allowed).toBe(false);
    expect(storage.check([check('client', observed)], 1).decisions[0].attempts).toBe(5);
    clock.advance(60_000);
    expect(storage.check([check('client', observed)], 1).decisions[0]).toMatchObject({ allowed: true, attempts: 1 });
  });
});
