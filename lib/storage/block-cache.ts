import type { RateLimitDecision, RateLimitResult } from './rate-limit-decision.js';
import type { RateLimitCheck } from './rate-limit-storage.interface.js';

interface Block {
  /** When the denied request was sent (local clock). */
  readonly sentAt: number;
  /** Until when (local clock) the key stays denied. */
  readonly until: number;
  /** The denied cost: another cost may pass sooner or later, so it goes to the storage. */
  readonly cost: number;
  readonly decision: RateLimitDecision;
}

/**
 * Remembers keys a remote storage denied, so a client flooding past its limit costs no round
 * trip until its retry-after ends. It can only repeat a denial the storage gave: a block holds
 * for the same rule (limit and burst) and the same cost, until a deadline measured from when the
 * request was *sent*, which is never later than the storage's own clock. Its retry-after is a
 * lower bound: requests from other app instances may have used the key since.
 */
export class BlockCache {
  private readonly blocks = new Map<string, Block>();

  constructor(private readonly maxKeys: number) {
    if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) {
      throw new Error(`RedisStorage: blockCache.maxKeys must be a positive integer, got ${String(maxKeys)}`);
    }
  }

  get size(): number {
    return this.blocks.size;
  }

  /** A denial for this check without asking the storage, or undefined. */
  find(checks: readonly RateLimitCheck[], cost: number, now: number): RateLimitResult | undefined {
    if (this.blocks.size === 0) return undefined;
    for (const { key, rule } of checks) {
      const block = this.blocks.get(key);
      if (block === undefined) continue;
      if (block.until <= now) {
        this.blocks.delete(key);
        continue;
      }
      const { decision } = block;
      const sameRule = decision.rule.limit === rule.limit && decision.rule.burst === rule.burst;
      // A cost above capacity is refused for good, which only the storage's answer says; and
      // another rule's blockFor would start a block on this denial, which only the storage can.
      if (sameRule && cost === block.cost && cost <= rule.capacity && !othersBlockFor(checks, key)) {
        // Only the blocking rule is known; the others were not consulted.
        const elapsed = now - block.sentAt;
        return {
          allowed: false,
          now,
          decisions: [{ ...decision, rule, retryAfterMs: block.until - now, resetMs: Math.max(0, decision.resetMs - elapsed) }],
        };
      }
    }
    return undefined;
  }

  /** Drops what it knows of these keys: their state was reset, or given units back. */
  forget(keys: Iterable<string>): void {
    if (this.blocks.size === 0) return;
    for (const key of keys) this.blocks.delete(key);
  }

  clear(): void {
    this.blocks.clear();
  }

  /** Records the denied rules of a result obtained for a request sent at `sentAt`. */
  record(checks: readonly RateLimitCheck[], cost: number, sentAt: number, result: RateLimitResult): void {
    if (result.allowed) {
      // The keys were just charged: a block on them would now understate the wait.
      if (this.blocks.size > 0) for (const { key } of checks) this.blocks.delete(key);
      return;
    }
    result.decisions.forEach((decision, i) => {
      if (decision.allowed || !Number.isFinite(decision.retryAfterMs) || decision.retryAfterMs <= 1) return;
      const key = checks[i].key;
      this.blocks.delete(key);
      // retryAfterMs was rounded up: one ms less keeps the block strictly inside the real wait.
      this.blocks.set(key, { sentAt, until: sentAt + decision.retryAfterMs - 1, cost, decision });
      if (this.blocks.size > this.maxKeys) this.blocks.delete(this.blocks.keys().next().value as string);
    });
  }
}

/** Whether a rule of the check other than the one under `key` has `blockFor`. */
function othersBlockFor(checks: readonly RateLimitCheck[], key: string): boolean {
  if (checks.length === 1) return false;
  for (const check of checks) if (check.key !== key && check.rule.blockMs > 0) return true;
  return false;
}
