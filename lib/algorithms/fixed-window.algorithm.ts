import type { AlgorithmOutcome, AlgorithmRule, AlgorithmState, RateLimitAlgorithm } from './algorithm.interface.js';
import { FIXED_WINDOW_LUA } from './fixed-window.lua.js';

interface FixedWindowState extends AlgorithmState {
  /** Units counted in the window that ends at `expiresAt`. */
  count: number;
}

/** At most `limit` units in each window aligned to the epoch. */
export const fixedWindow: RateLimitAlgorithm<FixedWindowState> = {
  name: 'fixed-window',
  code: 'fw',
  lua: FIXED_WINDOW_LUA,
  check(state, now, rule: AlgorithmRule, cost): AlgorithmOutcome<FixedWindowState> {
    const windowEnd = now - (now % rule.windowMs) + rule.windowMs;
    const count = state !== undefined && state.expiresAt === windowEnd ? state.count : 0;
    const resetMs = windowEnd - now;
    if (count + cost <= rule.limit) {
      return {
        allowed: true,
        remaining: rule.limit - count - cost,
        retryAfterMs: 0,
        resetMs,
        next: { count: count + cost, expiresAt: windowEnd },
      };
    }
    return {
      allowed: false,
      remaining: rule.limit - count,
      retryAfterMs: resetMs,
      resetMs,
      next: { count, expiresAt: windowEnd },
    };
  },
};
