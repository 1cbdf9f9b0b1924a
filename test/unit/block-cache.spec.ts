import { BlockCache, UNSUBSCRIBED_TRUST_MS } from '../../lib/storage/block-cache.js';
import type { RateLimitResult } from '../../lib/index.js';
import { keyOf, rulesOf } from '../conformance/limiter.js';

/** A cache whose invalidations arrive, as once RedisStorage has subscribed. */
function subscribedCache(): BlockCache {
  const cache = new BlockCache(10);
  cache.resubscribed();
  return cache;
}

describe('BlockCache', () => {
  const [limited, guarded] = rulesOf([
    { rate: '5/minute', algorithm: 'fixed-window' },
    { rate: '4/2 seconds', algorithm: 'gcra', blockMs: 700 },
  ]);
  const denial = (now: number): RateLimitResult => ({
    allowed: false,
    now,
    decisions: [{ rule: limited, allowed: false, limit: 5, remaining: 0, retryAfterMs: 30_000, resetMs: 30_000 }],
  });

  it('repeats a denial for the same rule and cost until its retry-after ends', () => {
    const cache = subscribedCache();
    const checks = [{ key: keyOf('a', limited), rule: limited }];
    cache.record(checks, 1, 1_000, denial(1_000), cache.sentGeneration, 1_000);
    expect(cache.find(checks, 1, 20_000)?.decisions[0].retryAfterMs).toBe(10_999);
    expect(cache.find(checks, 1, 30_999)).toBeUndefined();
  });

  it("does not answer for a check with another rule's blockFor: only the storage can start that block", () => {
    const cache = subscribedCache();
    const alone = [{ key: keyOf('a', limited), rule: limited }];
    const together = [...alone, { key: keyOf('a', guarded), rule: guarded }];
    cache.record(alone, 1, 1_000, denial(1_000), cache.sentGeneration, 1_000);
    expect(cache.find(alone, 1, 2_000)).toBeDefined();
    expect(cache.find(together, 1, 2_000)).toBeUndefined();
  });

  it('forgets keys it is told were reset, and everything on clear', () => {
    const cache = subscribedCache();
    const a = [{ key: keyOf('a', limited), rule: limited }];
    const b = [{ key: keyOf('b', limited), rule: limited }];
    cache.record(a, 1, 1_000, denial(1_000), cache.sentGeneration, 1_000);
    cache.record(b, 1, 1_000, denial(1_000), cache.sentGeneration, 1_000);
    cache.forget([a[0].key]);
    expect(cache.find(a, 1, 2_000)).toBeUndefined();
    expect(cache.find(b, 1, 2_000)).toBeDefined();
    cache.clear();
    expect(cache.size).toBe(0);
  });

  describe('a reset racing a denial in flight', () => {
    const a = [{ key: keyOf('a', limited), rule: limited }];
    const b = [{ key: keyOf('b', limited), rule: limited }];

    it('does not keep a denial sent before an invalidation of its key, however late it arrives', () => {
      const cache = subscribedCache();
      const sent = cache.sentGeneration; // the check leaves
      cache.forget([a[0].key]); // the reset's message arrives first
      cache.record(a, 1, 1_000, denial(1_000), sent, 1_010); // then the storage's older answer
      expect(cache.find(a, 1, 2_000)).toBeUndefined();
      // a check sent after the reset is a fresh answer, and is kept
      cache.record(a, 1, 1_020, denial(1_020), cache.sentGeneration, 1_030);
      expect(cache.find(a, 1, 2_000)).toBeDefined();
    });

    it('keeps a denial of another key sent before that invalidation', () => {
      const cache = subscribedCache();
      const sent = cache.sentGeneration;
      cache.forget([a[0].key]);
      cache.record(b, 1, 1_000, denial(1_000), sent, 1_010);
      expect(cache.find(b, 1, 2_000)).toBeDefined();
    });

    it('drops denials in flight on clear(), and on resubscribing (what was missed meanwhile is unknown)', () => {
      const cache = subscribedCache();
      let sent = cache.sentGeneration;
      cache.clear();
      cache.record(a, 1, 1_000, denial(1_000), sent, 1_010);
      expect(cache.size).toBe(0);
      sent = cache.sentGeneration;
      cache.unsubscribed();
      cache.resubscribed();
      cache.record(a, 1, 1_000, denial(1_000), sent, 1_010);
      expect(cache.size).toBe(0);
    });

    it('once it tracks more invalidated keys than maxKeys, treats every denial sent before as stale', () => {
      const cache = new BlockCache(3);
      cache.resubscribed();
      const sent = cache.sentGeneration;
      cache.forget(['x1', 'x2', 'x3']); // within its bound: only these are known stale
      cache.record(b, 1, 1_000, denial(1_000), sent, 1_010);
      expect(cache.find(b, 1, 2_000)).toBeDefined();
      cache.forget([b[0].key]);
      const before = cache.sentGeneration;
      cache.forget(['y1', 'y2', 'y3', 'y4']); // past it: forgets which keys, so nothing older is trusted
      cache.record(a, 1, 1_000, denial(1_000), before, 1_010);
      expect(cache.find(a, 1, 2_000)).toBeUndefined();
      cache.record(a, 1, 1_000, denial(1_000), cache.sentGeneration, 1_010);
      expect(cache.find(a, 1, 2_000)).toBeDefined();
    });

    it('holds at most maxKeys denials, dropping the oldest', () => {
      const cache = new BlockCache(2);
      cache.resubscribed();
      const keys = ['k1', 'k2', 'k3'].map((name) => [{ key: keyOf(name, limited), rule: limited }]);
      for (const checks of keys) cache.record(checks, 1, 1_000, denial(1_000), cache.sentGeneration, 1_000);
      expect(cache.size).toBe(2);
      expect(cache.find(keys[0], 1, 2_000)).toBeUndefined();
      expect(cache.find(keys[2], 1, 2_000)).toBeDefined();
    });
  });

  describe('while invalidations cannot arrive', () => {
    const a = [{ key: keyOf('a', limited), rule: limited }];

    it(`serves a denial for less than ${UNSUBSCRIBED_TRUST_MS} ms after it arrived, then sends checks to the storage`, () => {
      const cache = new BlockCache(10); // never subscribed
      expect(cache.listening).toBe(false);
      cache.record(a, 1, 1_000, denial(1_000), cache.sentGeneration, 1_200);
      expect(cache.find(a, 1, 1_200 + UNSUBSCRIBED_TRUST_MS - 1)).toBeDefined();
      expect(cache.find(a, 1, 1_200 + UNSUBSCRIBED_TRUST_MS)).toBeUndefined();
    });

    it('serves it until its retry-after when the storage cannot be asked either: nothing newer is known', () => {
      const cache = subscribedCache();
      cache.record(a, 1, 1_000, denial(1_000), cache.sentGeneration, 1_000);
      cache.unsubscribed();
      expect(cache.find(a, 1, 20_000)).toBeUndefined();
      expect(cache.find(a, 1, 20_000, true)?.decisions[0].retryAfterMs).toBe(10_999);
      expect(cache.find(a, 1, 31_000, true)).toBeUndefined();
    });
  });

  it('refuses a maxKeys that is not a positive integer, naming the option', () => {
    expect(() => new BlockCache(0)).toThrow('RedisStorage: blockCache.maxKeys must be a positive integer, got 0');
    expect(() => new BlockCache(1.5)).toThrow('got 1.5');
  });
});
