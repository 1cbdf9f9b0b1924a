import type { AlgorithmOutcome, AlgorithmState, RateLimitAlgorithm } from './algorithm.interface.js';
import { FIXED_WINDOW_LUA } from './fixed-window.lua.js';

interface FixedWindowState extends AlgorithmState {
  /** Units counted in the window that ends at `expiresAt`. */
  count: number;
}

/** At most `limit` units in each window aligned to the epoch. */
export const fixedWindow: RateLimitAlgorithm<FixedWindowState> = {
  name: 'fixed-window',
  code: 'fw',
  usesBurst: false,
  lua: FIXED_WINDOW_LUA,
  check(state, now, { limit, windowMs }, cost): AlgorithmOutcome<FixedWindowState> {
    const windowEnd = now - (now % windowMs) + windowMs;
    const count = state !== undefined && state.expiresAt === windowEnd ? state.count : 0;
    const resetMs = windowEnd - now;
    if (count + cost <= limit) {
      return {
        allowed: true,
        remaining: limit - count - cost,
        retryAfterMs: 0,
        resetMs,
        next: { count: count + cost, expiresAt: windowEnd },
      };
    }
    return { allowed: false, remaining: limit - count, retryAfterMs: resetMs, resetMs };
  },
};
