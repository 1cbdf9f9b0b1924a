import { createHash } from 'node:crypto';

/** An entry's object, its map slot, its count's bucket and a string header, about (V8, 64-bit). */
const ENTRY_OVERHEAD_BYTES = 200;

/** One identity the sketch follows. */
interface Entry {
  identity: string;
  /** How much of its count may belong to the identities it displaced (Space-Saving's ε). */
  error: number;
  bucket: Bucket;
  prev: Entry | undefined;
  next: Entry | undefined;
}

/** The entries that share one count; buckets are kept in ascending count order. */
interface Bucket {
  count: number;
  head: Entry | undefined;
  prev: Bucket | undefined;
  next: Bucket | undefined;
}

/** A heavy hitter as the sketch reports it. */
export interface HeavyHitter {
  readonly identity: string;
  /** Its count: never below its true count, at most `error` above it. */
  readonly count: number;
  readonly error: number;
}

/**
 * The heaviest identities of a stream in bounded memory: Space-Saving (Metwally, Agrawal and
 * El Abbadi, 2005) over a stream summary, so each `offer` is O(1) and allocates only when it
 * follows a new identity. With `capacity` k after n offers:
 * - every identity offered more than n/k times is followed;
 * - a followed identity's `count` is at least its true count and at most `error` (≤ n/k) above.
 *
 * Identities come from clients, so they are bounded in bytes: one longer than
 * `maxIdentityLength` is followed by its SHA-256 instead (`sha256:<hex>`), and the sketch holds
 * at most k × (that length + a constant) whatever clients send.
 */
export class SpaceSaving {
  private readonly entries = new Map<string, Entry>();
  /** The bucket of the smallest count, and of the largest. */
  private min: Bucket | undefined;
  private max: Bucket | undefined;
  private offered = 0;

  constructor(
    readonly capacity: number,
    readonly maxIdentityLength = 256,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`SpaceSaving capacity must be a positive integer, got ${capacity}`);
  }

  /** How many offers the sketch has seen. */
  get total(): number {
    return this.offered;
  }

  /**
   * Its bound in bytes: `capacity` entries of identities up to `maxIdentityLength` UTF-16 units,
   * each with its map slot, its links and (at worst) a count of its own.
   */
  get maxBytes(): number {
    return this.capacity * (2 * this.maxIdentityLength + ENTRY_OVERHEAD_BYTES);
  }

  /**
   * The most an identity it does not follow can have been offered: the smallest count once the
   * sketch is full, 0 before. What another sketch's absent identity adds to a merge's error.
   */
  get floor(): number {
    return this.entries.size < this.capacity ? 0 : (this.min?.count ?? 0);
  }

  /** How many identities it follows (at most `capacity`). */
  get size(): number {
    return this.entries.size;
  }

  offer(rawIdentity: string): void {
    const identity = rawIdentity.length > this.maxIdentityLength ? `sha256:${createHash('sha256').update(rawIdentity).digest('hex')}` : rawIdentity;
    this.offered++;
    const known = this.entries.get(identity);
    if (known !== undefined) return this.increment(known);
    if (this.entries.size < this.capacity) {
      const entry: Entry = { identity, error: 0, bucket: undefined!, prev: undefined, next: undefined };
      this.entries.set(identity, entry);
      return this.attach(entry, this.bucketOfOne());
    }
    // the least counted identity gives its place, and its count, to the newcomer
    const victim = this.min!.head!;
    this.entries.delete(victim.identity);
    victim.identity = identity;
    victim.error = victim.bucket.count;
    this.entries.set(identity, victim);
    this.increment(victim);
  }

  /** The `n` identities with the largest counts, largest first. */
  top(n: number): HeavyHitter[] {
    const out: HeavyHitter[] = [];
    for (let bucket = this.max; bucket !== undefined && out.length < n; bucket = bucket.prev) {
      for (let entry = bucket.head; entry !== undefined && out.length < n; entry = entry.next) {
        out.push({ identity: entry.identity, count: bucket.count, error: entry.error });
      }
    }
    return out;
  }

  /** Forgets everything (a new period). */
  clear(): void {
    this.entries.clear();
    this.min = this.max = undefined;
    this.offered = 0;
  }

  /** The bucket of count 1, made at the front if there is none. */
  private bucketOfOne(): Bucket {
    if (this.min !== undefined && this.min.count === 1) return this.min;
    const bucket: Bucket = { count: 1, head: undefined, prev: undefined, next: this.min };
    if (this.min !== undefined) this.min.prev = bucket;
    else this.max = bucket;
    this.min = bucket;
    return bucket;
  }

  /** One more for `entry`: it moves to the bucket of the next count. */
  private increment(entry: Entry): void {
    const from = entry.bucket;
    const count = from.count + 1;
    // alone in its bucket, with no bucket of the next count: the bucket itself counts up
    if (from.head === entry && entry.next === undefined && (from.next === undefined || from.next.count !== count)) {
      from.count = count;
      return;
    }
    let to = from.next;
    if (to === undefined || to.count !== count) {
      to = { count, head: undefined, prev: from, next: from.next };
      if (from.next !== undefined) from.next.prev = to;
      else this.max = to;
      from.next = to;
    }
    this.detach(entry);
    this.attach(entry, to);
  }

  private attach(entry: Entry, bucket: Bucket): void {
    entry.bucket = bucket;
    entry.prev = undefined;
    entry.next = bucket.head;
    if (bucket.head !== undefined) bucket.head.prev = entry;
    bucket.head = entry;
  }

  /** Takes `entry` out of its bucket, and the bucket out of the list if it is left empty. */
  private detach(entry: Entry): void {
    const bucket = entry.bucket;
    if (entry.prev !== undefined) entry.prev.next = entry.next;
    else bucket.head = entry.next;
    if (entry.next !== undefined) entry.next.prev = entry.prev;
    if (bucket.head !== undefined) return;
    if (bucket.prev !== undefined) bucket.prev.next = bucket.next;
    else this.min = bucket.next;
    if (bucket.next !== undefined) bucket.next.prev = bucket.prev;
    else this.max = bucket.prev;
  }
}
