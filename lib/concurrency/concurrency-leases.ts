import { flatCopy } from '../utils/flat-copy.js';
import type { ConcurrencyDecision } from './concurrency-decision.js';

/** The leases held under one key. */
interface KeyLeases {
  /** Expiry (ms since the epoch) by lease id. */
  readonly expiries: Map<string, number>;
  /** No lease expires before this; it may be earlier than the true minimum (never later). */
  earliest: number;
}

/** Keys the expiry sweep looks at per acquire: enough to keep up with new keys, cheap enough to ignore. */
const SWEEP_PER_ACQUIRE = 2;

/**
 * The memory half of concurrency limits (`@ConcurrencyLimit`); `concurrency-leases.lua.ts` is its
 * Redis twin and the conformance suite holds both to the same answers.
 *
 * Per key, the leases in flight: a lease is granted while fewer than `limit` live ones are held,
 * and lives until released or until it expires, `leaseMs` after it was granted (a request that
 * never reports its end must not hold a slot forever). An expired lease counts as released.
 *
 * Bounded: a key exists only while it holds leases. Releasing the last one deletes it, an acquire
 * drops the expired leases of its key, and each acquire advances a sweep over the other keys, so a
 * key whose leases all expired unreleased is freed without a timer.
 */
export class ConcurrencyLeases {
  private readonly byKey = new Map<string, KeyLeases>();
  /** Where the sweep stands: a live iterator sees the keys added and deleted since it started. */
  private sweep?: IterableIterator<[string, KeyLeases]>;

  constructor(private readonly clock: () => number) {}

  /** Keys held now. */
  get size(): number {
    return this.byKey.size;
  }

  /**
   * Grants lease `leaseId` if fewer than `limit` live leases are held under `key`. Acquiring a
   * lease that is still held renews it and counts it once.
   */
  acquire(key: string, limit: number, leaseMs: number, leaseId: string): ConcurrencyDecision {
    const now = this.clock();
    this.reclaim(now, SWEEP_PER_ACQUIRE);
    let leases = this.byKey.get(key);
    if (leases !== undefined && !this.dropExpired(key, leases, now)) leases = undefined;
    const inFlight = leases?.expiries.size ?? 0;
    const held = leases?.expiries.has(leaseId) ?? false;
    if (!held && inFlight >= limit) return { allowed: false, limit, inFlight };
    if (leases === undefined) {
      leases = { expiries: new Map(), earliest: Infinity };
      this.byKey.set(flatCopy(key), leases);
    }
    const expiresAt = now + leaseMs;
    leases.expiries.set(held ? leaseId : flatCopy(leaseId), expiresAt);
    if (expiresAt < leases.earliest) leases.earliest = expiresAt;
    return { allowed: true, limit, inFlight: held ? inFlight : inFlight + 1 };
  }

  /** Gives lease `leaseId` back; an unknown, expired or already released lease changes nothing. */
  release(key: string, leaseId: string): void {
    const leases = this.byKey.get(key);
    if (leases === undefined || !leases.expiries.delete(leaseId)) return;
    if (leases.expiries.size === 0) this.byKey.delete(key);
  }

  /** When the last lease under `key` expires, in ms since the epoch; like Redis `PEXPIRETIME`. */
  expiresAt(key: string): number | undefined {
    const leases = this.byKey.get(key);
    if (leases === undefined) return undefined;
    let latest = -Infinity;
    for (const expiry of leases.expiries.values()) if (expiry > latest) latest = expiry;
    return latest;
  }

  /** Looks at the next `budget` keys of an endless sweep and frees those whose leases all expired. */
  reclaim(now = this.clock(), budget = this.byKey.size): void {
    while (budget-- > 0 && this.byKey.size > 0) {
      let next = (this.sweep ??= this.byKey.entries()).next();
      if (next.done === true) next = (this.sweep = this.byKey.entries()).next(); // from the start again
      this.dropExpired(next.value[0], next.value[1], now);
    }
  }

  clear(): void {
    this.byKey.clear();
    this.sweep = undefined;
  }

  /** Drops the expired leases of `key`, and the key if none is left; false if it was dropped. */
  private dropExpired(key: string, leases: KeyLeases, now: number): boolean {
    if (now < leases.earliest) return true;
    let earliest = Infinity;
    for (const [id, expiry] of leases.expiries) {
      if (expiry <= now) leases.expiries.delete(id);
      else if (expiry < earliest) earliest = expiry;
    }
    leases.earliest = earliest;
    if (leases.expiries.size > 0) return true;
    this.byKey.delete(key);
    return false;
  }
}
