import type { AlgorithmOutcome, AlgorithmState, RateLimitAlgorithm } from './algorithm.interface.js';
import { LEAKY_BUCKET_LUA } from './leaky-bucket.lua.js';

interface LeakyBucketState extends AlgorithmState {
  level: number;
  /** When `level` was measured. */
  at: number;
}

/**
 * A meter that drains at `limit` per window and holds `burst`; a unit that would overflow it is
 * rejected at once (a policer, not a delay queue).
 */
export const leakyBucket: RateLimitAlgorithm<LeakyBucketState> = {
  name: 'leaky-bucket',
  code: 'lb',
  usesBurst: true,
  lua: LEAKY_BUCKET_LUA,
  check(state, now, { limit, windowMs, burst }, cost): AlgorithmOutcome<LeakyBucketState> {
    const level = state === undefined ? 0 : Math.max(0, state.level - ((now - state.at) * limit) / windowMs);
    if (level + cost <= burst) {
      const filled = level + cost;
      // Once drained, the state is the same as none: it expires then.
      const untilEmpty = Math.ceil((filled * windowMs) / limit);
      return {
        allowed: true,
        remaining: burst - filled,
        retryAfterMs: 0,
        resetMs: untilEmpty,
        next: { level: filled, at: now, expiresAt: now + untilEmpty },
      };
    }
    return {
      allowed: false,
      remaining: burst - level,
      retryAfterMs: cost <= burst ? ((level + cost - burst) * windowMs) / limit : 0,
      resetMs: (level * windowMs) / limit,
    };
  },
};
