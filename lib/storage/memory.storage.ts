import { getAlgorithm } from '../algorithms/algorithm-registry.js';
import { AlgorithmOutcome, STATE_STRIDE, type RateLimitAlgorithm } from '../algorithms/algorithm.interface.js';
import type { RateLimitRule } from '../rules/rate-limit-rule.js';
import { settleCheck, type RateLimitResult } from './rate-limit-decision.js';
import type { RateLimitCheck, RateLimitStorage } from './rate-limit-storage.interface.js';
import { flatCopy } from '../utils/flat-copy.js';
import { ConcurrencyLeases } from '../concurrency/concurrency-leases.js';
import type { ConcurrencyDecision } from '../concurrency/concurrency-decision.js';

export interface MemoryStorageOptions {
  /** Hard bound on stored keys; when full, a key not used lately is evicted. Default 100,000. */
  maxKeys?: number;
  /** Milliseconds since the epoch. Inject a fake clock in tests instead of sleeping. */
  clock?: () => number;
}

const DEFAULT_MAX_KEYS = 100_000;
/** Slot flags: charged since the CLOCK hand last passed; holds a block. */
const USED = 1;
const BLOCKED = 2;
/** Entries the expiry sweep looks at per check: enough to keep up with insertions, cheap enough to ignore. */
const RECLAIM_PER_CHECK = 2;
/** Numbers per slot once the limit advisor counts attempts: the state, then the attempts' window end and count. */
const OBSERVED_STRIDE = STATE_STRIDE + 2;
const INITIAL_SLOTS = 1_024;
/**
 * How long an expired key keeps its slot before the sweep frees it. A busy client of a generous
 * bucket expires within milliseconds of each request; freeing and re-adding it every time would
 * cost more than the check. An expired state already reads as none, so keeping it changes no
 * decision, and `maxKeys` bounds the memory either way.
 */
const SWEEP_GRACE_MS = 5_000;

/**
 * In-process storage: O(1) per rule, no timers, nothing allocated per check beyond its result.
 *
 * Layout: a `Map` from key to slot number, every slot's state in one `Float64Array` (four
 * numbers a key, six once the limit advisor counts its attempts) and its key in an array, so a key costs its
 * string, a map entry and 40 bytes (56 with the advisor). Keys are stored flat,
 * never as a concatenation or a slice of something larger. Sliding-window logs, whose size varies, live in a
 * side array by slot.
 *
 * The checks a rule set reuses per client carry a `hint`: the slot where this storage last found
 * the key. A valid hint (the slot still holds this very key string) skips the map, whose lookup
 * is most of a check's cost in a busy app, where the map is never in the CPU's cache.
 *
 * Bounds: at `maxKeys`, a CLOCK sweep over slots (the classic LRU approximation) evicts a key not
 * used since the hand last passed it; each check also advances an expiry sweep that frees dead keys.
 */
export class MemoryStorage implements RateLimitStorage {
  private readonly slotOf = new Map<string, number>();
  /** The key of each slot (undefined when free), so the sweeps walk slots, not Map iterators. */
  private readonly keyOf: (string | undefined)[] = [];
  private state = new Float64Array(0);
  /**
   * Per slot, USED if charged since the CLOCK hand last passed, and BLOCKED if it holds a block
   * (until its expiry) instead of an algorithm's state: one byte, so a check touches one line.
   */
  private flags = new Uint8Array(0);
  private readonly logs: (number[] | undefined)[] = [];
  private readonly freeSlots: number[] = [];
  private capacity = 0;
  private nextSlot = 0;
  private readonly maxKeys: number;
  private readonly clock: () => number;
  /** Next slot the expiry sweep looks at, and the CLOCK hand. */
  private sweepAt = 0;
  private handAt = 0;
  // Scratch space reused by every check.
  private readonly outcomes: AlgorithmOutcome[] = [];
  private readonly slots: number[] = [];
  private readonly wasBlocked: boolean[] = [];
  private readonly attempts: (number | undefined)[] = [];
  /**
   * Numbers per slot in `state`: the algorithm's STATE_STRIDE, and from the first check of a rule
   * the limit advisor follows, two more for its attempts (when their window ends, and their
   * count), beside the state so a check reads one place.
   */
  private stride = STATE_STRIDE;

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
    return this.slotOf.size;
  }

  check(checks: readonly RateLimitCheck[], cost: number): RateLimitResult {
    const now = this.clock();
    this.reclaim(now, RECLAIM_PER_CHECK);
    const allowed = this.evaluate(checks, cost, now);
    if (allowed) {
      // Keys that have a slot first: making room for a new key must not free a slot still to be written.
      for (let i = 0; i < checks.length; i++) if (this.slots[i] >= 0) this.commit(checks[i], this.slots[i], now, cost, this.outcomes[i]);
      for (let i = 0; i < checks.length; i++) if (this.slots[i] < 0) this.slots[i] = this.commit(checks[i], -1, now, cost, this.outcomes[i]);
    } else {
      for (let i = 0; i < checks.length; i++) {
        const { rule } = checks[i];
        const out = this.outcomes[i];
        if (!out.allowed && rule.blockMs > 0 && !this.wasBlocked[i] && cost <= rule.capacity) {
          // blockFor: denied by this rule, so denied by it until the block ends
          out.remaining = 0;
          out.retryAfterMs = out.resetMs = rule.blockMs;
          this.slots[i] = this.writeBlock(checks[i].key, this.slots[i], now + rule.blockMs, now);
        } else if (this.slots[i] >= 0) {
          this.flags[this.slots[i]] |= USED;
        }
      }
    }
    let observed = false;
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i];
      if (check.rule.observed !== true) {
        this.attempts[i] = undefined;
        continue;
      }
      // a fresh key refused outright (a cost past the capacity) has no slot yet: its attempts need one
      if (this.slots[i] < 0) this.slots[i] = this.attemptsOnlySlot(check, now);
      this.attempts[i] = this.countAttempt(this.slots[i], check.rule.windowMs, now, cost);
      observed = true;
    }
    return settleCheck(checks, now, cost, this.outcomes, true, now, observed ? this.attempts : undefined);
  }

  /**
   * The limit advisor's count of the units a client attempted in the rule's fixed window
   * (aligned on the epoch), this check's included whatever its verdict, beside the key's state
   * (the two numbers after it in `state`: when the window ends, and the count).
   */
  private countAttempt(slot: number, windowMs: number, now: number, cost: number): number {
    if (this.stride === STATE_STRIDE) this.relayout(OBSERVED_STRIDE);
    const state = this.state;
    const at = slot * OBSERVED_STRIDE + STATE_STRIDE;
    const end = (Math.floor(now / windowMs) + 1) * windowMs;
    const count = state[at] === end ? state[at + 1] + cost : cost;
    state[at] = end;
    state[at + 1] = count;
    return count;
  }

  /** Moves every slot's numbers to a layout of `stride` per slot (the advisor's, once). */
  private relayout(stride: number): void {
    const state = new Float64Array(this.capacity * stride);
    for (let slot = 0; slot < this.capacity; slot++) {
      for (let k = 0; k < STATE_STRIDE; k++) state[slot * stride + k] = this.state[slot * this.stride + k];
    }
    this.state = state;
    this.stride = stride;
  }

  private attemptsOnlySlot(check: RateLimitCheck, now: number): number {
    const owned = check.hint !== undefined;
    const slot = this.allocate(check.key, now, owned);
    if (owned) check.hint = slot;
    this.flags[slot] = USED;
    return slot;
  }

  /** Whether the key's slot still counts attempts of a window not over (it must outlive its state). */
  private countsAttempts(slot: number, now: number): boolean {
    return this.stride !== STATE_STRIDE && this.state[slot * this.stride + STATE_STRIDE] > now;
  }

  peek(checks: readonly RateLimitCheck[], cost: number): RateLimitResult {
    const now = this.clock();
    this.evaluate(checks, cost, now);
    return settleCheck(checks, now, cost, this.outcomes, false);
  }

  adjust(checks: readonly RateLimitCheck[], units: number): RateLimitResult {
    const now = this.clock();
    this.rewrite(checks, now, (algorithm, rule, at, out, log) => {
      algorithm.adjust(this.state, at, now, rule, units, out, log);
      return true;
    });
    return this.peek(checks, 1);
  }

  refund(checks: readonly RateLimitCheck[], cost: number, chargedAt: number): void {
    const now = this.clock();
    this.rewrite(checks, now, (algorithm, rule, at, out, log) => at >= 0 && algorithm.refund(this.state, at, now, rule, cost, chargedAt, out, log));
  }

  /**
   * Rewrites the state of each check's key that no block holds: `change` fills `out` from the
   * state at `at` (-1: none), or a list-based algorithm's log in place, and answers whether
   * anything changed.
   */
  private rewrite(
    checks: readonly RateLimitCheck[],
    now: number,
    change: (algorithm: RateLimitAlgorithm, rule: RateLimitRule, at: number, out: AlgorithmOutcome, log: number[] | undefined) => boolean,
  ): void {
    this.evaluate(checks, 1, now); // finds the blocked keys, which stay as they are
    for (let i = 0; i < checks.length; i++) {
      if (this.wasBlocked[i]) continue;
      const { key, rule } = checks[i];
      const algorithm = getAlgorithm(rule.algorithm);
      let slot = this.slotOf.get(key) ?? -1;
      const live = slot >= 0 && this.state[slot * this.stride] > now;
      const out = this.outcomes[i];
      const log = algorithm.log ? (live ? (this.logs[slot] ??= []) : []) : undefined;
      if (!change(algorithm, rule, live ? slot * this.stride : -1, out, log)) continue;
      if (out.expiresAt <= now) {
        if (slot >= 0) this.forget(key, slot, now);
        continue;
      }
      if (slot < 0) slot = this.allocate(key, now);
      this.store(slot, out);
      if (log) this.logs[slot] = log;
    }
  }

  reset(checks: readonly RateLimitCheck[]): void {
    const now = this.clock();
    for (const { key } of checks) {
      const slot = this.slotOf.get(key);
      if (slot !== undefined) this.forget(key, slot, now);
    }
  }

  /** Drops the key's state (and block); a slot still counting attempts keeps them, as Redis keeps their key. */
  private forget(key: string, slot: number, now: number): void {
    if (!this.countsAttempts(slot, now)) return this.freeSlot(key, slot);
    this.state.fill(0, slot * this.stride, slot * this.stride + STATE_STRIDE);
    this.flags[slot] &= ~BLOCKED;
    this.logs[slot] = undefined;
  }

  block(checks: readonly RateLimitCheck[], durationMs: number): void {
    const now = this.clock();
    for (const { key } of checks) this.writeBlock(key, this.slotOf.get(key) ?? -1, now + durationMs, now);
  }

  /** Every rule's verdict on a request of `cost`, into `outcomes`, `slots` and `wasBlocked`; writes nothing. */
  private evaluate(checks: readonly RateLimitCheck[], cost: number, now: number): boolean {
    let allowed = true;
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i];
      const { key, rule } = check;
      const hint = check.hint;
      let slot: number;
      if (hint !== undefined && hint >= 0 && this.keyOf[hint] === key) slot = hint;
      else {
        slot = this.slotOf.get(key) ?? -1;
        if (hint !== undefined) check.hint = slot;
      }
      const at = slot >= 0 && this.state[slot * this.stride] > now ? slot * this.stride : -1;
      const out = (this.outcomes[i] ??= new AlgorithmOutcome());
      this.slots[i] = slot;
      this.wasBlocked[i] = at >= 0 && (this.flags[slot] & BLOCKED) !== 0;
      if (this.wasBlocked[i]) {
        out.allowed = false;
        out.remaining = 0;
        out.retryAfterMs = out.resetMs = this.state[at] - now;
      } else {
        getAlgorithm(rule.algorithm).check(this.state, at, now, rule, cost, out, slot >= 0 ? this.logs[slot] : undefined);
      }
      allowed &&= out.allowed;
    }
    return allowed;
  }

  /**
   * Looks at the next `budget` slots of an endless sweep and frees keys expired for longer than a
   * short grace. Walking slots allocates nothing, unlike a Map iterator.
   */
  reclaim(now = this.clock(), budget = this.nextSlot): void {
    const end = this.nextSlot;
    if (end === 0) return;
    while (budget-- > 0) {
      const slot = this.sweepAt;
      this.sweepAt = slot + 1 >= end ? 0 : slot + 1;
      const key = this.keyOf[slot];
      if (key !== undefined && this.state[slot * this.stride] + SWEEP_GRACE_MS <= now && !this.countsAttempts(slot, now)) this.freeSlot(key, slot);
    }
  }

  /** When the state under `key` stops mattering, in ms since the epoch; like Redis `PEXPIRETIME`. */
  expiresAt(key: string): number | undefined {
    const slot = this.slotOf.get(key);
    return slot === undefined ? undefined : this.state[slot * this.stride];
  }

  clear(): void {
    this.slotOf.clear();
    this.keyOf.length = 0;
    this.logs.length = 0;
    this.freeSlots.length = 0;
    this.leases?.clear();
    this.nextSlot = 0;
    this.state.fill(0);
    this.flags.fill(0);
  }

  /** Stores an admitted outcome; returns the key's slot. */
  private commit(check: RateLimitCheck, known: number, now: number, cost: number, out: AlgorithmOutcome): number {
    let slot = known;
    if (slot < 0) {
      // a check with a hint comes from a rule set, whose keys are flat strings of their own
      const owned = check.hint !== undefined;
      slot = this.allocate(check.key, now, owned);
      if (owned) check.hint = slot;
    }
    const live = this.state[slot * this.stride] > now;
    this.store(slot, out);
    const { log } = getAlgorithm(check.rule.algorithm);
    if (log) {
      const entries = live ? (this.logs[slot] ??= []) : (this.logs[slot] = []);
      log.commit(entries, now, cost, out);
    }
    return slot;
  }

  private store(slot: number, out: AlgorithmOutcome): void {
    const at = slot * this.stride;
    this.state[at] = out.expiresAt;
    this.state[at + 1] = out.a;
    this.state[at + 2] = out.b;
    this.state[at + 3] = out.c;
    this.flags[slot] = USED;
  }

  /** Replaces the key's state with a block ending at `ends`; returns its slot. */
  private writeBlock(key: string, known: number, ends: number, now: number): number {
    const slot = known >= 0 ? known : this.allocate(key, now);
    const at = slot * this.stride;
    this.state.fill(0, at, at + STATE_STRIDE);
    this.state[at] = ends;
    this.flags[slot] = USED | BLOCKED;
    this.logs[slot] = undefined;
    return slot;
  }

  /** `owned`: the key is a flat string of its own, kept as is; otherwise a flat copy is kept. */
  private allocate(key: string, now: number, owned = false): number {
    if (this.slotOf.size >= this.maxKeys) this.evictOne(now);
    let slot = this.freeSlots.pop();
    if (slot === undefined) {
      slot = this.nextSlot++;
      if (slot >= this.capacity) this.grow();
    }
    const kept = owned ? key : flatCopy(key);
    this.slotOf.set(kept, slot);
    this.keyOf[slot] = kept;
    return slot;
  }

  /** CLOCK: the hand passes over slots in turn, sparing (once) keys used since it last passed. */
  private evictOne(now: number): void {
    const end = this.nextSlot;
    for (let steps = 0; steps <= 2 * end; steps++) {
      const slot = this.handAt;
      this.handAt = slot + 1 >= end ? 0 : slot + 1;
      const key = this.keyOf[slot];
      if (key === undefined) continue;
      if ((this.flags[slot] & USED) !== 0 && (this.state[slot * this.stride] > now || this.countsAttempts(slot, now))) {
        this.flags[slot] &= ~USED;
        continue;
      }
      this.freeSlot(key, slot);
      return;
    }
  }

  private freeSlot(key: string, slot: number): void {
    this.slotOf.delete(key);
    this.keyOf[slot] = undefined;
    this.state[slot * this.stride] = 0;
    this.flags[slot] = 0;
    this.logs[slot] = undefined;
    if (this.stride !== STATE_STRIDE) this.state[slot * this.stride + STATE_STRIDE] = 0;
    this.freeSlots.push(slot);
  }

  private grow(): void {
    const capacity = Math.min(Math.max(INITIAL_SLOTS, this.capacity * 2), Math.max(this.maxKeys, this.nextSlot));
    const state = new Float64Array(capacity * this.stride);
    state.set(this.state);
    const flags = new Uint8Array(capacity);
    flags.set(this.flags);
    this.state = state;
    this.flags = flags;
    this.capacity = capacity;
  }

  /** Concurrency slots (`@ConcurrencyLimit`), created with the first; see ConcurrencyLeases. */
  private leases?: ConcurrencyLeases;

  acquire(key: string, limit: number, leaseMs: number, leaseId: string): ConcurrencyDecision {
    return (this.leases ??= new ConcurrencyLeases(this.clock)).acquire(key, limit, leaseMs, leaseId);
  }

  release(key: string, leaseId: string): void {
    this.leases?.release(key, leaseId);
  }

  /** Always answers: this process is the store (for RateLimitHealthIndicator). */
  ping(): void {}
}
