import type { AlgorithmOutcome, AlgorithmState, RateLimitAlgorithm } from './algorithm.interface.js';
import { SLIDING_WINDOW_LOG_LUA } from './sliding-window-log.lua.js';

interface SlidingWindowLogState extends AlgorithmState {
  /** One timestamp per admitted unit, oldest first. */
  log: number[];
}

/** At most `limit` units in any window-long interval: exact, at the price of one entry per unit. */
export const slidingWindowLog: RateLimitAlgorithm<SlidingWindowLogState> = {
  name: 'sliding-window-log',
  code: 'sl',
  usesBurst: false,
  lua: SLIDING_WINDOW_LOG_LUA,
  check(state, now, { limit, windowMs }, cost): AlgorithmOutcome<SlidingWindowLogState> {
    const log = state?.log ?? [];
    // Entries at or before now - window have left the window.
    let first = 0;
    while (first < log.length && log[first] <= now - windowMs) first++;
    const count = log.length - first;
    if (count + cost <= limit) {
      const kept = log.slice(first);
      for (let i = 0; i < cost; i++) kept.push(now);
      return {
        allowed: true,
        remaining: limit - count - cost,
        retryAfterMs: 0,
        resetMs: windowMs,
        next: { log: kept, expiresAt: now + windowMs },
      };
    }
    // Wait until enough of the oldest entries leave the window to make room for `cost`.
    const retryAfterMs = cost <= limit ? log[first + count + cost - limit - 1] + windowMs - now : 0;
    const resetMs = count > 0 ? log[log.length - 1] + windowMs - now : 0;
    return { allowed: false, remaining: limit - count, retryAfterMs, resetMs };
  },
};
