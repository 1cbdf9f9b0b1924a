import type { RateLimitAlgorithm } from './algorithm.interface.js';
import { GCRA_ADJUST_LUA, GCRA_LUA, GCRA_REFUND_LUA } from './gcra.lua.js';
import { undrained } from './undrained.js';

/**
 * Generic cell rate algorithm: one unit per emission interval (window / limit), with a tolerance
 * of `burst` units ahead of schedule. State: one number, the theoretical arrival time.
 */
export const gcra: RateLimitAlgorithm = {
  name: 'gcra',
  code: 'gc',
  usesBurst: true,
  lua: GCRA_LUA,
  luaAdjust: GCRA_ADJUST_LUA,
  luaRefund: GCRA_REFUND_LUA,
  check(state, at, now, { limit, windowMs, burst }, cost, out) {
    const interval = windowMs / limit;
    // An expired state has tat <= now, so this agrees with Lua's max(stored, now).
    const base = at < 0 ? now : Math.max(state[at + 1], now);
    const tat = base + cost * interval;
    const allowAt = tat - burst * interval;
    if (allowAt <= now) {
      const untilIdle = Math.ceil(tat - now);
      out.allowed = true;
      out.remaining = (now - allowAt) / interval;
      out.retryAfterMs = 0;
      out.resetMs = untilIdle;
      out.expiresAt = now + untilIdle;
      out.a = tat;
      return;
    }
    out.allowed = false;
    out.remaining = (now - (base - burst * interval)) / interval;
    out.retryAfterMs = cost <= burst ? allowAt - now : 0;
    out.resetMs = base - now;
  },
  adjust(state, at, now, { limit, windowMs }, units, out) {
    const interval = windowMs / limit;
    const base = at < 0 ? now : Math.max(state[at + 1], now);
    // A refund never puts the schedule behind now: that would bank credit beyond a fresh state.
    const tat = Math.max(now, base + units * interval);
    out.expiresAt = now + Math.ceil(tat - now);
    out.a = tat;
  },
  refund(state, at, now, rule, cost, chargedAt, out) {
    const units = undrained(now, chargedAt, rule, cost);
    if (at < 0 || units <= 0) return false;
    this.adjust(state, at, now, rule, -units, out);
    return true;
  },
};
