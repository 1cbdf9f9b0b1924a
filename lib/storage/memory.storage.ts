import { getAlgorithm } from '../algorithms/algorithm-registry.js';
import type { AlgorithmOutcome, AlgorithmState } from '../algorithms/algorithm.interface.js';
import { settleCheck, type RateLimitResult } from './rate-limit-decision.js';
import type { RateLimitCheck, RateLimitStorage } from './rate-limit-storage.interface.js';

export interface MemoryStorageOptions {
  /** Hard bound on stored keys; the least recently charged key is evicted first. Default 100,000. */
  maxKeys?: number;
  /** Milliseconds since the epoch. Inject a fake clock in tests instead of sleeping. */
  clock?: () => number;
}

const DEFAULT_MAX_KEYS = 100_000;
/** Expired entries looked at per check: enough to keep up with insertions, cheap enough to ignore. */
const RECLAIM_PER_CHECK = 2;

/**
 * In-process storage: O(1) per rule, no timers. A `Map` in least-recently-charged order gives
 * LRU eviction at `maxKeys`; each check also advances a sweep that drops expired entries.
 */
export class MemoryStorage implements RateLimitStorage {
  private readonly entries = new Map<string, AlgorithmState>();
  private readonly maxKeys: number;
  private readonly clock: () => number;
  private sweep: Iterator<[string, AlgorithmState]> = this.entries.entries();

  constructor(options: MemoryStorageOptions = {}) {
    const maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
    if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) {
      throw new Error(`MemoryStorage: maxKeys must be a positive integer, got ${String(options.maxKeys)}.`);
    }
    this.maxKeys = maxKeys;
    this.clock = options.clock ?? Date.now;
  }

  /** Number of keys held now, expired ones included until reclaimed. */
  get size(): number {
    return this.entries.size;
  }

  check(checks: readonly RateLimitCheck[], cost: number): RateLimitResult {
    const now = this.clock();
    this.reclaim(now, RECLAIM_PER_CHECK);
    const outcomes: AlgorithmOutcome[] = [];
    let allowed = true;
    for (const { key, rule } of checks) {
      let state = this.entries.get(key);
      if (state !== undefined && state.expiresAt <= now) state = undefined;
      const outcome = getAlgorithm(rule.algorithm).check(state, now, rule, cost);
      allowed &&= outcome.allowed;
      outcomes.push(outcome);
    }
    if (allowed) {
      for (let i = 0; i < checks.length; i++) this.store(checks[i].key, outcomes[i].next!);
    }
    return settleCheck(
      checks.map((c) => c.rule),
      now,
      cost,
      (i) => [outcomes[i].allowed, outcomes[i].remaining, outcomes[i].retryAfterMs, outcomes[i].resetMs],
    );
  }

  /**
   * Looks at the next `budget` entries of an endless sweep and drops the expired ones.
   * A live Map iterator survives inserts and deletes, so the sweep visits every key in turn.
   */
  reclaim(now = this.clock(), budget = this.entries.size): void {
    while (budget-- > 0) {
      let next = this.sweep.next();
      if (next.done) {
        this.sweep = this.entries.entries();
        next = this.sweep.next();
        if (next.done) return;
      }
      const [key, state] = next.value;
      if (state.expiresAt <= now) this.entries.delete(key);
    }
  }

  /** When the state under `key` stops mattering, in ms since the epoch; like Redis `PEXPIRETIME`. */
  expiresAt(key: string): number | undefined {
    return this.entries.get(key)?.expiresAt;
  }

  clear(): void {
    this.entries.clear();
  }

  private store(key: string, state: AlgorithmState): void {
    // Re-inserting moves the key to the hot end of the Map's order.
    this.entries.delete(key);
    this.entries.set(key, state);
    if (this.entries.size > this.maxKeys) {
      this.entries.delete(this.entries.keys().next().value as string);
    }
  }
}
