import type { AlgorithmOutcome, AlgorithmState, RateLimitAlgorithm } from './algorithm.interface.js';
import { TOKEN_BUCKET_LUA } from './token-bucket.lua.js';

interface TokenBucketState extends AlgorithmState {
  tokens: number;
  /** When `tokens` was measured. */
  at: number;
}

/** A bucket of `burst` tokens, refilled continuously at `limit` per window; a unit takes a token. */
export const tokenBucket: RateLimitAlgorithm<TokenBucketState> = {
  name: 'token-bucket',
  code: 'tb',
  usesBurst: true,
  lua: TOKEN_BUCKET_LUA,
  check(state, now, { limit, windowMs, burst }, cost): AlgorithmOutcome<TokenBucketState> {
    const tokens = state === undefined ? burst : Math.min(burst, state.tokens + ((now - state.at) * limit) / windowMs);
    if (cost <= tokens) {
      const left = tokens - cost;
      // Once full again, the state is the same as none: it expires then.
      const untilFull = Math.ceil(((burst - left) * windowMs) / limit);
      return {
        allowed: true,
        remaining: left,
        retryAfterMs: 0,
        resetMs: untilFull,
        next: { tokens: left, at: now, expiresAt: now + untilFull },
      };
    }
    return {
      allowed: false,
      remaining: tokens,
      retryAfterMs: cost <= burst ? ((cost - tokens) * windowMs) / limit : 0,
      resetMs: ((burst - tokens) * windowMs) / limit,
    };
  },
};
