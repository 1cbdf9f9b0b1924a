import type { RateLimitAlgorithm } from './algorithm.interface.js';
import { FIXED_WINDOW_ADJUST_LUA, FIXED_WINDOW_LUA, FIXED_WINDOW_REFUND_LUA } from './fixed-window.lua.js';

/** At most `limit` units in each window aligned to the epoch. State: window end, count. */
export const fixedWindow: RateLimitAlgorithm = {
  name: 'fixed-window',
  code: 'fw',
  usesBurst: false,
  lua: FIXED_WINDOW_LUA,
  luaAdjust: FIXED_WINDOW_ADJUST_LUA,
  luaRefund: FIXED_WINDOW_REFUND_LUA,
  check(state, at, now, { limit, windowMs }, cost, out) {
    const windowEnd = now - (now % windowMs) + windowMs;
    const count = at >= 0 && state[at] === windowEnd ? state[at + 1] : 0;
    const resetMs = windowEnd - now;
    out.resetMs = resetMs;
    if (count + cost <= limit) {
      out.allowed = true;
      out.remaining = limit - count - cost;
      out.retryAfterMs = 0;
      out.expiresAt = windowEnd;
      out.a = count + cost;
    } else {
      out.allowed = false;
      out.remaining = limit - count;
      out.retryAfterMs = resetMs;
    }
  },
  adjust(state, at, now, { windowMs }, units, out) {
    const windowEnd = now - (now % windowMs) + windowMs;
    const count = at >= 0 && state[at] === windowEnd ? state[at + 1] : 0;
    out.expiresAt = windowEnd;
    out.a = Math.max(0, count + units);
  },
  refund(state, at, now, { windowMs }, cost, chargedAt, out) {
    const windowEnd = now - (now % windowMs) + windowMs;
    // units of an earlier window went with it: giving them back here would make room twice
    if (at < 0 || state[at] !== windowEnd || chargedAt - (chargedAt % windowMs) + windowMs !== windowEnd) return false;
    out.expiresAt = windowEnd;
    out.a = Math.max(0, state[at + 1] - cost);
    return true;
  },
};
