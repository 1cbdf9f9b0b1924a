import type { RateLimitAlgorithm } from './algorithm.interface.js';
import { TOKEN_BUCKET_ADJUST_LUA, TOKEN_BUCKET_LUA, TOKEN_BUCKET_REFUND_LUA } from './token-bucket.lua.js';
import { undrained } from './undrained.js';

/**
 * A bucket of `burst` tokens, refilled continuously at `limit` per window; a unit takes a token.
 * State: tokens, when they were counted.
 */
export const tokenBucket: RateLimitAlgorithm = {
  name: 'token-bucket',
  code: 'tb',
  usesBurst: true,
  lua: TOKEN_BUCKET_LUA,
  luaAdjust: TOKEN_BUCKET_ADJUST_LUA,
  luaRefund: TOKEN_BUCKET_REFUND_LUA,
  check(state, at, now, { limit, windowMs, burst }, cost, out) {
    const tokens = at < 0 ? burst : Math.min(burst, state[at + 1] + ((now - state[at + 2]) * limit) / windowMs);
    if (cost <= tokens) {
      const left = tokens - cost;
      // Once full again, the state is the same as none: it expires then.
      const untilFull = Math.ceil(((burst - left) * windowMs) / limit);
      out.allowed = true;
      out.remaining = left;
      out.retryAfterMs = 0;
      out.resetMs = untilFull;
      out.expiresAt = now + untilFull;
      out.a = left;
      out.b = now;
      return;
    }
    out.allowed = false;
    out.remaining = tokens;
    out.retryAfterMs = cost <= burst ? ((cost - tokens) * windowMs) / limit : 0;
    out.resetMs = ((burst - tokens) * windowMs) / limit;
  },
  adjust(state, at, now, { limit, windowMs, burst }, units, out) {
    const tokens = at < 0 ? burst : Math.min(burst, state[at + 1] + ((now - state[at + 2]) * limit) / windowMs);
    // A penalty may take the bucket below zero: the client then waits for the debt to refill.
    const left = Math.min(burst, tokens - units);
    out.expiresAt = now + Math.ceil(((burst - left) * windowMs) / limit);
    out.a = left;
    out.b = now;
  },
  refund(state, at, now, rule, cost, chargedAt, out) {
    const units = undrained(now, chargedAt, rule, cost);
    if (at < 0 || units <= 0) return false;
    this.adjust(state, at, now, rule, -units, out);
    return true;
  },
};
