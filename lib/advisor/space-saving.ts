import { createHash } from 'node:crypto';

const FILTER_ROWS = 2;
const FILTER_BITS = 10;
const FILTER_WIDTH = 1 << FILTER_BITS;
const FILTER_MASK = FILTER_WIDTH - 1;

/** FNV-1a of the UTF-16 code units: where an identity's counters are in the filter. */
export function identityHash(identity: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < identity.length; i++) hash = Math.imul(hash ^ identity.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

/**
 * The marks of followed identities: counters by a third position of the hash, raised when an
 * identity takes a place and lowered when it loses it. An identity whose mark is 0 is not
 * followed, which spares most offers the map lookup.
 */
const MARK_BITS = 11;

/** An identity's mark among `MARK_BITS` bits' worth of counters. */
function markOf(hash: number): number {
  return Math.imul(hash, 0x85ebca6b) >>> (32 - MARK_BITS);
}

/** An entry's object, its map slot, its count's bucket and a string header, about (V8, 64-bit). */
const ENTRY_OVERHEAD_BYTES = 200;

/** One identity the sketch follows. */
export interface Entry {
  identity: string;
  /** Its place among the marks (`markOf` of the hash it was offered with). */
  mark: number;
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
 * El Abbadi, 2005) over a stream summary, behind a count-min filter (conservative update) that
 * decides who may take a place. Classic Space-Saving gives the least counted place to every
 * newcomer, so among many light clients nearly every offer is a replacement (two map writes,
 * and every caller's cached place made stale). Here a newcomer takes a place only once its
 * estimated count, never below its true count, passes the `floor`: the larger of the least
 * count and n/k. Light clients never do. With `capacity` k after n offers:
 * - every identity offered more than `floor` times is followed;
 * - an identity not followed was offered at most `floor` times;
 * - a followed identity's `count` is at least its true count and at most `error` above: a
 *   newcomer is counted at the floor plus one, its error the floor.
 * An offer is one filter update and a look at the identity's mark; only an identity that may be
 * followed, or may take a place, is looked up. Nothing is allocated unless an identity takes a
 * place. A caller that hashed the identity once (the advisor does, per client) passes its hash.
 *
 * Identities come from clients, so they are bounded in bytes: one longer than
 * `maxIdentityLength` is followed by its SHA-256 instead (`sha256:<hex>`), and the sketch holds
 * at most k × (that length + a constant), plus the filter's and the marks' fixed 12 KB, whatever
 * clients send.
 */
export class SpaceSaving {
  private readonly entries = new Map<string, Entry>();
  /** The bucket of the smallest count, and of the largest. */
  private min: Bucket | undefined;
  private max: Bucket | undefined;
  private offered = 0;
  /** Whether every place is taken (`entries.size === capacity`), kept as a field for the offers' fast path. */
  private full = false;
  /** The count-min filter: FILTER_ROWS rows of FILTER_WIDTH counters, indexed by the identity's hash. */
  private readonly filter = new Uint32Array(FILTER_ROWS * FILTER_WIDTH);
  /** Followed identities by mark (see MARK_BITS). */
  private readonly marks = new Uint16Array(1 << MARK_BITS);

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
    return this.capacity * (2 * this.maxIdentityLength + ENTRY_OVERHEAD_BYTES) + this.filter.byteLength + this.marks.byteLength;
  }

  /**
   * The most an identity it does not follow can have been offered: the larger of the smallest
   * count and n/k once the sketch is full, 0 before. What another sketch's absent identity adds
   * to a merge's error.
   */
  get floor(): number {
    return !this.full ? 0 : Math.max(this.min!.count, Math.floor(this.offered / this.capacity));
  }

  /** How many identities it follows (at most `capacity`). */
  get size(): number {
    return this.entries.size;
  }

  /** One more for `rawIdentity`; `hash`: its `identityHash`, if the caller keeps it. */
  offer(rawIdentity: string, hash = identityHash(rawIdentity)): void {
    const estimate = this.estimateAndCount(hash);
    this.offered++;
    const mark = markOf(hash);
    // not followed (its mark is 0), and short of a place: most offers end here
    if (this.full && this.marks[mark] === 0 && estimate <= this.floor) return;
    const identity = rawIdentity.length > this.maxIdentityLength ? `sha256:${createHash('sha256').update(rawIdentity).digest('hex')}` : rawIdentity;
    const known = this.entries.get(identity);
    if (known !== undefined) return this.increment(known);
    if (!this.full) {
      // nobody was ever refused a place since the last clear: this is its first offer
      const entry: Entry = { identity, mark, error: 0, bucket: undefined!, prev: undefined, next: undefined };
      this.entries.set(identity, entry);
      this.marks[mark]++;
      this.full = this.entries.size === this.capacity;
      this.attach(entry, this.bucketOfOne());
      return;
    }
    const floor = this.floor;
    if (estimate <= floor) return;
    // the least counted identity gives its place to the newcomer. Until now it was refused (it
    // had at most the floor then, and the floor never falls) or dropped (at most the least count
    // then): so it has at most the floor plus this offer.
    const victim = this.min!.head!;
    this.entries.delete(victim.identity);
    this.marks[victim.mark]--;
    this.detach(victim);
    victim.identity = identity;
    victim.mark = mark;
    victim.error = floor;
    this.entries.set(identity, victim);
    this.marks[mark]++;
    this.attach(victim, this.bucketOf(floor + 1));
  }

  /**
   * Adds one to the identity's counters and answers its estimate: the least of them, raised
   * only where it is the least (conservative update), so it never falls below the true count.
   */
  private estimateAndCount(hash: number): number {
    const filter = this.filter;
    const a = hash & FILTER_MASK;
    const b = FILTER_WIDTH + (Math.imul(hash, 0x9e3779b1) >>> (32 - FILTER_BITS));
    const estimate = Math.min(filter[a], filter[b]) + 1;
    if (filter[a] < estimate) filter[a] = estimate;
    if (filter[b] < estimate) filter[b] = estimate;
    return estimate;
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
    this.full = false;
    this.filter.fill(0);
    this.marks.fill(0);
  }

  /** The bucket of `count`, made in its place if there is none (rare: an identity taking a place). */
  private bucketOf(count: number): Bucket {
    let before: Bucket | undefined;
    let after = this.min;
    while (after !== undefined && after.count < count) {
      before = after;
      after = after.next;
    }
    if (after !== undefined && after.count === count) return after;
    const bucket: Bucket = { count, head: undefined, prev: before, next: after };
    if (before !== undefined) before.next = bucket;
    else this.min = bucket;
    if (after !== undefined) after.prev = bucket;
    else this.max = bucket;
    return bucket;
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
