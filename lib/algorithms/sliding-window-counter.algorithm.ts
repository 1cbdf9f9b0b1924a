import type { AlgorithmOutcome, AlgorithmState, RateLimitAlgorithm } from './algorithm.interface.js';
import { SLIDING_WINDOW_COUNTER_LUA } from './sliding-window-counter.lua.js';

interface SlidingWindowCounterState extends AlgorithmState {
  /** Start of the aligned window `current` counts. */
  start: number;
  current: number;
  /** Count of the window before `start`. */
  previous: number;
}

/**
 * The previous window's count, weighted by how much of it the sliding window still covers, plus
 * the current count, stays within `limit`. Two numbers per key.
 */
export const slidingWindowCounter: RateLimitAlgorithm<SlidingWindowCounterState> = {
  name: 'sliding-window-counter',
  code: 'sc',
  usesBurst: false,
  lua: SLIDING_WINDOW_COUNTER_LUA,
  check(state, now, { limit, windowMs }, cost): AlgorithmOutcome<SlidingWindowCounterState> {
    const start = now - (now % windowMs);
    let current = 0;
    let previous = 0;
    if (state !== undefined && state.start === start) {
      current = state.current;
      previous = state.previous;
    } else if (state !== undefined && state.start === start - windowMs) {
      previous = state.current;
    }
    const elapsed = now - start;
    const estimate = (previous * (windowMs - elapsed)) / windowMs + current;
    if (estimate + cost <= limit) {
      return {
        allowed: true,
        remaining: limit - estimate - cost,
        retryAfterMs: 0,
        resetMs: 2 * windowMs - elapsed,
        next: { start, current: current + cost, previous, expiresAt: start + 2 * windowMs },
      };
    }
    let retryAfterMs = 0;
    if (cost > limit) {
      retryAfterMs = 0; // never admissible; reported as such by the storage
    } else if (current + cost <= limit) {
      // The previous window's weight fades enough before this window ends.
      retryAfterMs = windowMs - elapsed - ((limit - current - cost) * windowMs) / previous;
    } else {
      // Only the next window has room, once this window's count has faded enough.
      retryAfterMs = windowMs - elapsed + Math.max(0, windowMs - ((limit - cost) * windowMs) / current);
    }
    const resetMs = current > 0 ? 2 * windowMs - elapsed : previous > 0 ? windowMs - elapsed : 0;
    return { allowed: false, remaining: limit - estimate, retryAfterMs, resetMs };
  },
};
