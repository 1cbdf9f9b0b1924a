import { mostConstraining, policyHeader, policyName, rateLimitHeaders } from '../../lib/headers/rate-limit-headers.js';
import type { RateLimitDecision, RateLimitRule } from '../../lib/index.js';

const rule = (name: string, limit: number, windowMs: number): RateLimitRule => ({
  name, text: '', limit, windowMs, algorithm: 'fixed-window', burst: limit, capacity: limit, keySuffix: '', blockMs: 0, count: 'all',
});
const decision = (r: RateLimitRule, allowed: boolean, remaining: number, retryAfterMs: number, resetMs: number): RateLimitDecision => ({
  rule: r, allowed, limit: r.limit, remaining, retryAfterMs, resetMs,
});

describe('rate-limit headers', () => {
  const second = rule('api-1s', 10, 1_000);
  const day = rule('api-1d', 1000, 86_400_000);

  it('lists every rule in RateLimit-Policy', () => {
    expect(policyHeader([second, day])).toBe('"api-1s";q=10;w=1, "api-1d";q=1000;w=86400');
  });

  it('reports the rule with least quota left when allowed, the longest wait when denied', () => {
    const allowed = [decision(second, true, 9, 0, 400), decision(day, true, 3, 0, 5_000_000)];
    expect(mostConstraining(allowed).rule).toBe(day);
    const denied = [decision(second, false, 0, 400, 400), decision(day, false, 0, 5_000_000, 5_000_000)];
    expect(mostConstraining(denied).rule).toBe(day);
    const mixed = [decision(day, true, 0, 0, 5_000_000), decision(second, false, 0, 400, 400)];
    expect(mostConstraining(mixed).rule).toBe(second);
  });

  it('writes each mode', () => {
    const result = { allowed: true, now: 0, decisions: [decision(second, true, 9, 0, 400)] };
    const policy = policyHeader([second]);
    expect(rateLimitHeaders('ietf', result, policy)).toEqual([
      ['ratelimit-policy', '"api-1s";q=10;w=1'],
      ['ratelimit', '"api-1s";r=9;t=1'],
    ]);
    expect(rateLimitHeaders('legacy', result, policy)).toEqual([
      ['x-ratelimit-limit', '10'],
      ['x-ratelimit-remaining', '9'],
      ['x-ratelimit-reset', '1'],
    ]);
    expect(rateLimitHeaders('both', result, policy)).toHaveLength(5);
    expect(rateLimitHeaders(false, result, policy)).toEqual([]);
  });

  it('keeps policy names inside a structured-field string', () => {
    expect(policyName('Ctrl.méthod"\\\n')).toBe('Ctrl.m_thod___');
  });
});
