import type { AlgorithmRule } from './algorithm.interface.js';

/**
 * The part of `cost` units charged at `chargedAt` that a bucket (token, leaky, GCRA) still holds
 * at `now`: the charge drains at the rate, like any other. What has drained was given back by
 * time already, and giving it back again would make room the charge never took: a bucket that
 * refilled to the brim meanwhile would then hold more than it can, and the requests admitted
 * since would have had room they never had.
 *
 * Exact for a charge that nothing waited ahead of. One that queued behind others drains after
 * them, so more of it counts than this says: it gets less back than it could, never more.
 * `UNDRAINED_LUA` is its twin, the same expression in the same order.
 */
export function undrained(now: number, chargedAt: number, { limit, windowMs }: AlgorithmRule, cost: number): number {
  return cost - Math.max(0, ((now - chargedAt) * limit) / windowMs);
}

export const UNDRAINED_LUA = `local function undrained(now, charged_at, limit, window, cost)
  return cost - math.max(0, ((now - charged_at) * limit) / window)
end`;
