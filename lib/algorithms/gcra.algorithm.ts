import type { AlgorithmOutcome, AlgorithmState, RateLimitAlgorithm } from './algorithm.interface.js';
import { GCRA_LUA } from './gcra.lua.js';

interface GcraState extends AlgorithmState {
  /** Theoretical arrival time: when the client will have used no quota at all. */
  tat: number;
}

/**
 * Generic cell rate algorithm: one unit per emission interval (window / limit), with a tolerance
 * of `burst` units ahead of schedule. One number per key.
 */
export const gcra: RateLimitAlgorithm<GcraState> = {
  name: 'gcra',
  code: 'gc',
  usesBurst: true,
  lua: GCRA_LUA,
  check(state, now, { limit, windowMs, burst }, cost): AlgorithmOutcome<GcraState> {
    const interval = windowMs / limit;
    // An expired state has tat <= now, so this agrees with Lua's max(stored, now).
    const base = state === undefined ? now : Math.max(state.tat, now);
    const tat = base + cost * interval;
    const allowAt = tat - burst * interval;
    if (allowAt <= now) {
      const untilIdle = Math.ceil(tat - now);
      return {
        allowed: true,
        remaining: (now - allowAt) / interval,
        retryAfterMs: 0,
        resetMs: untilIdle,
        next: { tat, expiresAt: now + untilIdle },
      };
    }
    return {
      allowed: false,
      remaining: (now - (base - burst * interval)) / interval,
      retryAfterMs: cost <= burst ? allowAt - now : 0,
      resetMs: base - now,
    };
  },
};
