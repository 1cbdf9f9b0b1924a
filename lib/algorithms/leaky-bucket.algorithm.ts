import type { RateLimitAlgorithm } from './algorithm.interface.js';
import { LEAKY_BUCKET_ADJUST_LUA, LEAKY_BUCKET_LUA, LEAKY_BUCKET_REFUND_LUA } from './leaky-bucket.lua.js';
import { undrained } from './undrained.js';

/**
 * A meter that drains at `limit` per window and holds `burst`; a unit that would overflow it is
 * rejected at once (a policer, not a delay queue). State: level, when it was measured.
 */
export const leakyBucket: RateLimitAlgorithm = {
  name: 'leaky-bucket',
  code: 'lb',
  usesBurst: true,
  lua: LEAKY_BUCKET_LUA,
  luaAdjust: LEAKY_BUCKET_ADJUST_LUA,
  luaRefund: LEAKY_BUCKET_REFUND_LUA,
  check(state, at, now, { limit, windowMs, burst }, cost, out) {
    const level = at < 0 ? 0 : Math.max(0, state[at + 1] - ((now - state[at + 2]) * limit) / windowMs);
    if (level + cost <= burst) {
      const filled = level + cost;
      // Once drained, the state is the same as none: it expires then.
      const untilEmpty = Math.ceil((filled * windowMs) / limit);
      out.allowed = true;
      out.remaining = burst - filled;
      out.retryAfterMs = 0;
      out.resetMs = untilEmpty;
      out.expiresAt = now + untilEmpty;
      out.a = filled;
      out.b = now;
      return;
    }
    out.allowed = false;
    out.remaining = burst - level;
    out.retryAfterMs = cost <= burst ? ((level + cost - burst) * windowMs) / limit : 0;
    out.resetMs = (level * windowMs) / limit;
  },
  adjust(state, at, now, { limit, windowMs }, units, out) {
    const level = at < 0 ? 0 : Math.max(0, state[at + 1] - ((now - state[at + 2]) * limit) / windowMs);
    // A penalty may fill the meter past `burst`: the client then waits for it to drain back.
    const filled = Math.max(0, level + units);
    out.expiresAt = now + Math.ceil((filled * windowMs) / limit);
    out.a = filled;
    out.b = now;
  },
  refund(state, at, now, rule, cost, chargedAt, out) {
    const units = undrained(now, chargedAt, rule, cost);
    if (at < 0 || units <= 0) return false;
    this.adjust(state, at, now, rule, -units, out);
    return true;
  },
};
