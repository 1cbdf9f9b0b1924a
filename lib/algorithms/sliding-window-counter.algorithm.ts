import type { RateLimitAlgorithm } from './algorithm.interface.js';
import { SLIDING_WINDOW_COUNTER_ADJUST_LUA, SLIDING_WINDOW_COUNTER_LUA, SLIDING_WINDOW_COUNTER_REFUND_LUA } from './sliding-window-counter.lua.js';

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
  luaRefund: SLIDING_WINDOW_COUNTER_REFUND_LUA,
  check(state, at, now, { limit, windowMs }, cost, out) {
    const start = now - (now % windowMs);
    const { current, previous } = countsAt(state, at, start, windowMs);
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
    const { current, previous } = countsAt(state, at, start, windowMs);
    // A refund comes out of this window first; what this window lacks, out of the previous one.
    const fromCurrent = Math.max(-current, units);
    out.expiresAt = start + 2 * windowMs;
    out.a = start;
    out.b = current + fromCurrent;
    out.c = Math.max(0, previous + (units - fromCurrent));
  },
  refund(state, at, now, { windowMs }, cost, chargedAt, out) {
    const start = now - (now % windowMs);
    const charged = chargedAt - (chargedAt % windowMs);
    let { current, previous } = countsAt(state, at, start, windowMs);
    // out of the count of the window that took the units: from the previous one, at its weight now
    if (charged === start && current > 0) current = Math.max(0, current - cost);
    else if (charged === start - windowMs && previous > 0) previous = Math.max(0, previous - cost);
    else return false;
    out.expiresAt = start + 2 * windowMs;
    out.a = start;
    out.b = current;
    out.c = previous;
    return true;
  },
};

/** Reused by every call, so reading the counts allocates nothing. */
const counts = { current: 0, previous: 0 };

/** The counts of the window starting at `start` and of the one before, from state that may be older. */
function countsAt(state: Float64Array, at: number, start: number, windowMs: number): typeof counts {
  counts.current = 0;
  counts.previous = 0;
  if (at >= 0 && state[at + 1] === start) {
    counts.current = state[at + 2];
    counts.previous = state[at + 3];
  } else if (at >= 0 && state[at + 1] === start - windowMs) {
    counts.previous = state[at + 2];
  }
  return counts;
}
