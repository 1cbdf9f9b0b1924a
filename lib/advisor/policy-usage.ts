import type { AlgorithmName } from '../algorithms/algorithm.interface.js';
import type { RateLimitMode } from '../rate-limit.options.js';
import type { RateLimitRule } from '../rules/rate-limit-rule.js';
import { SpaceSaving } from './space-saving.js';
import { UsageHistogram, usageThresholds } from './usage-histogram.js';

/** Time buckets each policy keeps: an hour of 5-minute buckets for windows up to 5 minutes. */
export const RETAINED_BUCKETS = 12;
const MIN_BUCKET_MS = 5 * 60_000;
/** The heavy-hitters sketches each cover a clock hour; the current one and the one before are kept. */
export const SKETCH_MS = 3_600_000;

/**
 * A bucket's length: the smallest multiple of the policy's window that is at least 5 minutes.
 * Windows are aligned on the epoch, so each lies within one bucket, and a client's usage in a
 * window is counted in one bucket whole.
 */
export function bucketLength(windowMs: number): number {
  return Math.ceil(MIN_BUCKET_MS / windowMs) * windowMs;
}

/** What the advisor knows of a policy, wherever its figures come from. */
export interface PolicyMeta {
  /** The rule's place in storage after the client's hash tag: one policy per budget. */
  readonly id: string;
  readonly name: string;
  readonly rate: string;
  readonly limit: number;
  readonly windowMs: number;
  readonly algorithm: AlgorithmName;
  mode: RateLimitMode;
  readonly bucketMs: number;
  readonly thresholds: Int32Array;
}

/** One time bucket: the usage histogram of the windows in it, and the requests refused. */
export class UsageBucket {
  index = -1;
  denied = 0;
  shadowDenied = 0;
  /** Whether anything was recorded since it was last added to Redis. */
  dirty = false;
  readonly histogram: UsageHistogram;

  constructor(thresholds: Int32Array) {
    this.histogram = new UsageHistogram(thresholds);
  }

  reset(index: number): void {
    this.index = index;
    this.denied = this.shadowDenied = 0;
    this.dirty = false;
    this.histogram.reached.fill(0);
    this.histogram.from.fill(0);
  }
}

/** A clock hour's heavy hitters. */
export interface HourSketch {
  hour: number;
  readonly sketch: SpaceSaving;
}

/**
 * One policy's usage as this instance saw it: a ring of time buckets and two hourly sketches,
 * allocated when the policy is first seen and never grown: `bytes` whatever the number of
 * clients. Recording is a few comparisons, a binary search and increments; nothing is allocated
 * except when the sketch starts following an identity it did not.
 */
export class PolicyUsage {
  readonly meta: PolicyMeta;
  readonly buckets: UsageBucket[] = [];
  readonly sketches: HourSketch[];
  /** The bucket recorded last, and the time it covers: the next request almost always falls in it. */
  private current: UsageBucket;
  private currentStart = 0;
  private currentEnd = 0;
  /** The sketch of the hour recorded last, from `sketchStart`. */
  private currentSketch: SpaceSaving;
  private sketchStart = -Infinity;
  /**
   * Client-windows that reached each threshold, and requests refused, in buckets this instance
   * has let go (rotated out, or added to Redis): with the live buckets, a total that only grows,
   * for OpenTelemetry's counters.
   */
  readonly reachedBefore: Float64Array;

  constructor(rule: RateLimitRule, mode: RateLimitMode, trackedIdentities: number) {
    const thresholds = usageThresholds(rule.limit);
    this.meta = {
      id: rule.keySuffix,
      name: rule.name,
      rate: rule.text,
      limit: rule.limit,
      windowMs: rule.windowMs,
      algorithm: rule.algorithm,
      mode,
      bucketMs: bucketLength(rule.windowMs),
      thresholds,
    };
    for (let i = 0; i < RETAINED_BUCKETS; i++) this.buckets.push(new UsageBucket(thresholds));
    this.current = this.buckets[0];
    this.sketches = [0, 1].map(() => ({ hour: -1, sketch: new SpaceSaving(trackedIdentities) }));
    this.currentSketch = this.sketches[0].sketch;
    this.reachedBefore = new Float64Array(thresholds.length);
  }

  /**
   * A request decided at `now`: its client had attempted `attempts` units in the window, this
   * request's `cost` included; `refused` by this policy, and let through only in shadow mode.
   * `key`: the client's storage key for the policy, one string per client, and `hash` its
   * `identityHash`.
   */
  record(now: number, attempts: number, cost: number, refused: boolean, shadow: boolean, key: string, hash: number): void {
    let bucket = this.current;
    // a comparison, not a division, while the bucket lasts
    if (now < this.currentStart || now >= this.currentEnd) {
      const { bucketMs } = this.meta;
      const found = this.bucketFor(Math.floor(now / bucketMs));
      if (found === undefined) return;
      bucket = this.current = found;
      this.currentStart = found.index * bucketMs;
      this.currentEnd = this.currentStart + bucketMs;
    }
    bucket.histogram.record(attempts, cost);
    if (refused) {
      if (shadow) bucket.shadowDenied++;
      else bucket.denied++;
    }
    bucket.dirty = true;
    let sketch = this.currentSketch;
    if (now < this.sketchStart || now >= this.sketchStart + SKETCH_MS) {
      const hour = Math.floor(now / SKETCH_MS);
      const entry = this.sketches[hour & 1];
      if (entry.hour !== hour) {
        if (entry.hour > hour) return;
        entry.hour = hour;
        entry.sketch.clear();
      }
      sketch = this.currentSketch = entry.sketch;
      this.sketchStart = hour * SKETCH_MS;
    }
    sketch.offer(key, hash);
  }

  /** Buckets holding time from `since` on, oldest first. */
  bucketsSince(since: number): UsageBucket[] {
    const first = Math.floor(since / this.meta.bucketMs);
    return this.buckets.filter((bucket) => bucket.index >= first).sort((a, b) => a.index - b.index);
  }

  /** Sketches of the hours from `since` on. */
  sketchesSince(since: number): SpaceSaving[] {
    const first = Math.floor(since / SKETCH_MS);
    return this.sketches.filter((entry) => entry.hour >= first).map((entry) => entry.sketch);
  }

  /** Bytes held: thresholds, buckets and the sketches at their bound. */
  get bytes(): number {
    const histogram = this.buckets[0].histogram.bytes - this.meta.thresholds.byteLength;
    return this.meta.thresholds.byteLength * 2 + histogram * RETAINED_BUCKETS + this.sketches.reduce((sum, entry) => sum + entry.sketch.maxBytes, 0);
  }

  /** Adds a bucket's figures to the running totals before they leave this instance. */
  retire(bucket: UsageBucket): void {
    const { reached } = bucket.histogram;
    for (let k = 0; k < reached.length; k++) this.reachedBefore[k] += reached[k];
  }

  /** The bucket of `index`, reusing the slot of one too old to keep; undefined if `index` is itself too old. */
  private bucketFor(index: number): UsageBucket | undefined {
    const bucket = this.buckets[index % RETAINED_BUCKETS];
    if (bucket.index === index) return bucket;
    if (bucket.index > index) return undefined;
    if (bucket.index >= 0) this.retire(bucket);
    bucket.reset(index);
    return bucket;
  }
}
