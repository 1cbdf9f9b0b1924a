import { BlockCache } from '../../lib/storage/block-cache.js';
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
});
