import type { RateLimitDecision, RateLimitResult } from './rate-limit-decision.js';
import type { RateLimitCheck } from './rate-limit-storage.interface.js';

interface Block {
  /** When the denied request was sent (local clock). */
  readonly sentAt: number;
  /** When the denial arrived (local clock). */
  readonly receivedAt: number;
  /** Until when (local clock) the key stays denied. */
  readonly until: number;
  /** The denied cost: another cost may pass sooner or later, so it goes to the storage. */
  readonly cost: number;
  readonly decision: RateLimitDecision;
}

/**
 * How long a denial is served from the cache while no invalidation can reach it (the
 * subscription is down): a reset made elsewhere meanwhile is then heard of by asking the storage
 * again, this long after the denial at the latest.
 */
export const UNSUBSCRIBED_TRUST_MS = 1_000;

/**
 * Remembers keys a remote storage denied, so a client flooding past its limit costs no round
 * trip until its retry-after ends. It can only repeat a denial the storage gave: a block holds
 * for the same rule (limit and burst) and the same cost, until a deadline measured from when the
 * request was *sent*, which is never later than the storage's own clock. Its retry-after is a
 * lower bound: requests from other app instances may have used the key since.
 *
 * A reset anywhere wins over a denial in flight: each invalidation (a reset or refund heard of,
 * here or from another instance) moves a generation on, a check remembers the generation it was
 * sent in, and a denial is cached only if no invalidation of its key came since. The storage may
 * have run the check before the reset, yet its answer arrive after the reset's message: that
 * denial is stale and is not kept. While invalidations cannot arrive (`subscribed` false), a
 * denial is served for {@link UNSUBSCRIBED_TRUST_MS} at most, unless the storage cannot be asked.
 */
export class BlockCache {
  private readonly blocks = new Map<string, Block>();
  /** Invalidations so far. */
  private generation = 0;
  /** The generation of the latest invalidation of recently invalidated keys. */
  private readonly invalidated = new Map<string, number>();
  /** Checks sent before this generation may have missed an invalidation `invalidated` no longer holds. */
  private floor = 0;
  /** Whether invalidations can reach this cache now. */
  private subscribed = false;

  constructor(private readonly maxKeys: number) {
    if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) {
      throw new Error(`RedisStorage: blockCache.maxKeys must be a positive integer, got ${String(maxKeys)}`);
    }
  }

  get size(): number {
    return this.blocks.size;
  }

  /** What a check sent now must carry to `record` its answer. */
  get sentGeneration(): number {
    return this.generation;
  }

  /** Whether invalidations reach this cache (its subscription is up). */
  get listening(): boolean {
    return this.subscribed;
  }

  /**
   * A denial for this check without asking the storage, or undefined. `unreachable`: the storage
   * cannot be asked (an outage), so a denial holds until its retry-after even while no
   * invalidation can arrive: nothing newer is known, and the failure policy would let it pass.
   */
  find(checks: readonly RateLimitCheck[], cost: number, now: number, unreachable = false): RateLimitResult | undefined {
    if (this.blocks.size === 0) return undefined;
    for (const { key, rule } of checks) {
      const block = this.blocks.get(key);
      if (block === undefined) continue;
      if (block.until <= now) {
        this.blocks.delete(key);
        continue;
      }
      if (!this.subscribed && !unreachable && now - block.receivedAt >= UNSUBSCRIBED_TRUST_MS) continue;
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

  /** Drops what it knows of these keys, and of denials of them still in flight: their state was reset, or given units back. */
  forget(keys: Iterable<string>): void {
    const generation = ++this.generation;
    for (const key of keys) {
      this.blocks.delete(key);
      this.invalidated.set(key, generation);
    }
    if (this.invalidated.size > this.maxKeys) {
      // bounded: what it no longer tells apart, it treats as invalidated
      this.invalidated.clear();
      this.floor = generation;
    }
  }

  /** Forgets every denial, and every denial still in flight. */
  clear(): void {
    this.blocks.clear();
    this.invalidated.clear();
    this.floor = ++this.generation;
  }

  /** Invalidations can no longer arrive: denials are served a short while only. */
  unsubscribed(): void {
    this.subscribed = false;
  }

  /** Invalidations arrive again. Any missed meanwhile is unknown: the cache starts over. */
  resubscribed(): void {
    this.clear();
    this.subscribed = true;
  }

  /**
   * Records the denied rules of a result for a request sent at `sentAt` in generation
   * `sentGeneration`, received at `receivedAt` (local clock).
   */
  record(checks: readonly RateLimitCheck[], cost: number, sentAt: number, result: RateLimitResult, sentGeneration: number, receivedAt: number): void {
    if (result.allowed) {
      // The keys were just charged: a block on them would now understate the wait.
      if (this.blocks.size > 0) for (const { key } of checks) this.blocks.delete(key);
      return;
    }
    if (sentGeneration < this.floor) return;
    result.decisions.forEach((decision, i) => {
      if (decision.allowed || !Number.isFinite(decision.retryAfterMs) || decision.retryAfterMs <= 1) return;
      const key = checks[i].key;
      // a reset or refund of the key since the check was sent: the storage may have denied it before
      if ((this.invalidated.get(key) ?? -1) > sentGeneration) return;
      this.blocks.delete(key);
      // retryAfterMs was rounded up: one ms less keeps the block strictly inside the real wait.
      this.blocks.set(key, { sentAt, receivedAt, until: sentAt + decision.retryAfterMs - 1, cost, decision });
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
