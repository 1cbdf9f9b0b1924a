import type { RateLimitAlgorithm } from './algorithm.interface.js';
import { SLIDING_WINDOW_COUNTER_ADJUST_LUA, SLIDING_WINDOW_COUNTER_LUA } from './sliding-window-counter.lua.js';

/**
 * The previous window's count, weighted by how much of it the sliding window still covers, plus
 * the current count, stays within `limit`. State: window start, current count, previous count.
 */
export const slidingWindowCounter: RateLimitAlgorithm = {
  name: 'sliding-window-counter',
  code: 'sc',
  usesBurst: false,
  lua: SLIDING_WINDOW_COUNTER_LUA,
  luaAdjust: SLIDING_WINDOW_COUNTER_ADJUST_LUA,
  check(state, at, now, { limit, windowMs }, cost, out) {
    const start = now - (now % windowMs);
    let current = 0;
    let previous = 0;
    if (at >= 0 && state[at + 1] === start) {
      current = state[at + 2];
      previous = state[at + 3];
    } else if (at >= 0 && state[at + 1] === start - windowMs) {
      previous = state[at + 2];
    }
    const elapsed = now - start;
    const estimate = (previous * (windowMs - elapsed)) / windowMs + current;
    if (estimate + cost <= limit) {
      out.allowed = true;
      out.remaining = limit - estimate - cost;
      out.retryAfterMs = 0;
      out.resetMs = 2 * windowMs - elapsed;
      out.expiresAt = start + 2 * windowMs;
      out.a = start;
      out.b = current + cost;
      out.c = previous;
      return;
    }
    out.allowed = false;
    out.remaining = limit - estimate;
    if (cost > limit) {
      out.retryAfterMs = 0; // never admissible; reported as such by the storage
    } else if (current + cost <= limit) {
      // The previous window's weight fades enough before this window ends.
      out.retryAfterMs = windowMs - elapsed - ((limit - current - cost) * windowMs) / previous;
    } else {
      // Only the next window has room, once this window's count has faded enough.
      out.retryAfterMs = windowMs - elapsed + Math.max(0, windowMs - ((limit - cost) * windowMs) / current);
    }
    out.resetMs = current > 0 ? 2 * windowMs - elapsed : previous > 0 ? windowMs - elapsed : 0;
  },
  adjust(state, at, now, { windowMs }, units, out) {
    const start = now - (now % windowMs);
    let current = 0;
    let previous = 0;
    if (at >= 0 && state[at + 1] === start) {
      current = state[at + 2];
      previous = state[at + 3];
    } else if (at >= 0 && state[at + 1] === start - windowMs) {
      previous = state[at + 2];
    }
    // A refund comes out of this window first; what this window lacks, out of the previous one.
    const fromCurrent = Math.max(-current, units);
    out.expiresAt = start + 2 * windowMs;
    out.a = start;
    out.b = current + fromCurrent;
    out.c = Math.max(0, previous + (units - fromCurrent));
  },
};
