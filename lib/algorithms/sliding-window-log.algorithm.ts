import type { AlgorithmOutcome, RateLimitAlgorithm } from './algorithm.interface.js';
import { SLIDING_WINDOW_LOG_LUA } from './sliding-window-log.lua.js';

const NO_ENTRIES: readonly number[] = [];

/**
 * At most `limit` units in any window-long interval: exact, at the price of one entry per unit.
 * State: a list of timestamps, oldest first.
 */
export const slidingWindowLog: RateLimitAlgorithm = {
  name: 'sliding-window-log',
  code: 'sl',
  usesBurst: false,
  lua: SLIDING_WINDOW_LOG_LUA,
  check(state, at, now, { limit, windowMs }, cost, out, log) {
    const entries = at >= 0 && log !== undefined ? log : NO_ENTRIES;
    // Entries at or before now - window have left the window.
    let first = 0;
    while (first < entries.length && entries[first] <= now - windowMs) first++;
    const count = entries.length - first;
    if (count + cost <= limit) {
      out.allowed = true;
      out.remaining = limit - count - cost;
      out.retryAfterMs = 0;
      out.resetMs = windowMs;
      out.expiresAt = now + windowMs;
      out.a = at >= 0 ? first : 0; // entries to drop on commit
      return;
    }
    out.allowed = false;
    out.remaining = limit - count;
    // Wait until enough of the oldest entries leave the window to make room for `cost`.
    out.retryAfterMs = cost <= limit ? entries[first + count + cost - limit - 1] + windowMs - now : 0;
    out.resetMs = count > 0 ? entries[entries.length - 1] + windowMs - now : 0;
  },
  log: {
    commit(log: number[], now: number, cost: number, out: AlgorithmOutcome) {
      if (out.a > 0) log.splice(0, out.a);
      for (let i = 0; i < cost; i++) log.push(now);
    },
  },
};
