import type { Cluster, Redis } from 'ioredis';
import type { AdvisorTimelinePoint } from './advisor-report.js';
import { mergeSketches, type SketchView } from './heavy-hitters.js';
import type { PolicyFigures } from './policy-report.js';
import { RETAINED_BUCKETS, SKETCH_MS, type PolicyMeta, type PolicyUsage, type UsageBucket } from './policy-usage.js';
import { UsageHistogram } from './usage-histogram.js';

/** Fields of a sketch's hash that no identity can be (identities are key parts: no `*`). */
const FLOOR_FIELD = '*floor';
/** Sketches outlive their hour by two, so the previous hour's is there all through the next. */
const SKETCH_TTL_MS = 3 * SKETCH_MS;

/**
 * The advisor's figures in Redis, shared by every instance: each adds what it saw since its last
 * flush to per-bucket counters (HINCRBY, so the sums are exact whatever the interleaving), and
 * replaces its own snapshot of each hour's heavy hitters.
 *
 * Keys, beside the limiter's under the same prefix; one policy's all carry one hash tag:
 * - `<prefix>:advisor:policies`: a hash, policy id → its description (JSON);
 * - `<prefix>:advisor:{<policy>}:b:<bucket>`: a hash, `r<k>` (client-windows that reached
 *   threshold k), `f<k>` (requests counted from it), `d` (refused), `s` (shadow-refused);
 * - `<prefix>:advisor:{<policy>}:t:<hour>`: a set of the instances that saw it, and
 *   `...:t:<hour>:<instance>`: a hash, identity → `<count> <error>`.
 * Everything expires: buckets after the retained span, sketches after three hours.
 */
export class AdvisorStore {
  constructor(
    private readonly client: Redis | Cluster,
    private readonly keyPrefix: string,
  ) {}

  private get policiesKey(): string {
    return `${this.keyPrefix}:advisor:policies`;
  }

  private base(id: string): string {
    return `${this.keyPrefix}:advisor:{${id}}`;
  }

  /** Describes a policy, once per instance (a later one with other settings replaces it). */
  async describe(meta: PolicyMeta): Promise<void> {
    const { id, name, rate, limit, windowMs, algorithm, mode, bucketMs, thresholds } = meta;
    await this.client.hset(this.policiesKey, id, JSON.stringify({ id, name, rate, limit, windowMs, algorithm, mode, bucketMs, thresholds: [...thresholds] }));
  }

  /**
   * Adds the policy's unflushed buckets to Redis and replaces this instance's sketches, in one
   * transaction; what was sent is then taken off the local buckets (they may have grown since).
   * `identity` turns a sketch's key into what the report shows.
   */
  async flush(usage: PolicyUsage, instance: string, identity: (key: string) => string): Promise<void> {
    const base = this.base(usage.meta.id);
    const { bucketMs } = usage.meta;
    const multi = this.client.multi();
    const sent: { bucket: UsageBucket; reached: Float64Array; from: Float64Array; denied: number; shadowDenied: number }[] = [];
    for (const bucket of usage.buckets) {
      if (!bucket.dirty) continue;
      const { reached, from } = bucket.histogram;
      const key = `${base}:b:${bucket.index}`;
      for (let k = 0; k < reached.length; k++) {
        if (reached[k] !== 0) multi.hincrby(key, `r${k}`, reached[k]);
        if (from[k] !== 0) multi.hincrby(key, `f${k}`, from[k]);
      }
      if (bucket.denied !== 0) multi.hincrby(key, 'd', bucket.denied);
      if (bucket.shadowDenied !== 0) multi.hincrby(key, 's', bucket.shadowDenied);
      multi.pexpire(key, RETAINED_BUCKETS * bucketMs);
      sent.push({ bucket, reached: reached.slice(), from: from.slice(), denied: bucket.denied, shadowDenied: bucket.shadowDenied });
    }
    for (const { hour, sketch } of usage.sketches) {
      if (hour < 0 || sketch.total === 0) continue;
      const key = `${base}:t:${hour}:${instance}`;
      const fields: string[] = [FLOOR_FIELD, String(sketch.floor)];
      for (const { identity: raw, count, error } of sketch.top(sketch.capacity)) fields.push(identity(raw), `${count} ${error}`);
      multi.del(key).hset(key, ...fields).pexpire(key, SKETCH_TTL_MS);
      multi.sadd(`${base}:t:${hour}`, instance).pexpire(`${base}:t:${hour}`, SKETCH_TTL_MS);
    }
    if (sent.length === 0 && usage.sketches.every((entry) => entry.sketch.total === 0)) return;
    const replies = await multi.exec();
    const failed = replies?.find(([error]) => error !== null)?.[0];
    if (replies === null || failed) throw failed ?? new Error('the advisor flush was aborted');
    for (const { bucket, reached, from, denied, shadowDenied } of sent) {
      const { histogram } = bucket;
      bucket.denied -= denied;
      bucket.shadowDenied -= shadowDenied;
      // a request recorded since was counted in `from`, and refusals in their own fields
      let left = bucket.denied !== 0 || bucket.shadowDenied !== 0;
      for (let k = 0; k < reached.length; k++) {
        histogram.reached[k] -= reached[k];
        histogram.from[k] -= from[k];
        usage.reachedBefore[k] += reached[k];
        if (histogram.from[k] !== 0) left = true;
      }
      bucket.dirty = left;
    }
  }

  /** Every policy any instance described. */
  async policies(): Promise<PolicyMeta[]> {
    const described = await this.client.hgetall(this.policiesKey);
    const out: PolicyMeta[] = [];
    for (const text of Object.values(described)) {
      try {
        const parsed = JSON.parse(text) as Omit<PolicyMeta, 'thresholds'> & { thresholds: number[] };
        out.push({ ...parsed, thresholds: Int32Array.from(parsed.thresholds) });
      } catch {
        // a description this version cannot read: that policy is left out, the others stand
      }
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** A policy's figures over `[now - periodMs, now]`, every instance's together. */
  async figures(meta: PolicyMeta, now: number, periodMs: number): Promise<Omit<PolicyFigures, 'meta'>> {
    const base = this.base(meta.id);
    const { bucketMs } = meta;
    const last = Math.floor(now / bucketMs);
    const first = Math.max(Math.floor((now - periodMs) / bucketMs), last - RETAINED_BUCKETS + 1);
    const firstHour = Math.floor((now - periodMs) / SKETCH_MS);
    const hours: number[] = [];
    for (let hour = Math.max(firstHour, Math.floor(now / SKETCH_MS) - 1); hour <= Math.floor(now / SKETCH_MS); hour++) hours.push(hour);
    const pipeline = this.client.pipeline();
    for (let index = first; index <= last; index++) pipeline.hgetall(`${base}:b:${index}`);
    for (const hour of hours) pipeline.smembers(`${base}:t:${hour}`);
    const replies = (await pipeline.exec()) ?? [];
    const histogram = new UsageHistogram(meta.thresholds);
    const timeline: AdvisorTimelinePoint[] = [];
    let denied = 0;
    let shadowDenied = 0;
    for (let index = first; index <= last; index++) {
      const fields = (replies[index - first]?.[1] ?? {}) as Record<string, string>;
      let requests = 0;
      for (let k = 0; k < meta.thresholds.length; k++) {
        histogram.reached[k] += Number(fields[`r${k}`] ?? 0);
        const counted = Number(fields[`f${k}`] ?? 0);
        histogram.from[k] += counted;
        requests += counted;
      }
      const d = Number(fields.d ?? 0);
      const s = Number(fields.s ?? 0);
      denied += d;
      shadowDenied += s;
      timeline.push({ start: new Date(index * bucketMs).toISOString(), requests, denied: d, shadowDenied: s });
    }
    const sketchKeys: string[] = [];
    hours.forEach((hour, i) => {
      const instances = (replies[last - first + 1 + i]?.[1] ?? []) as string[];
      for (const instance of instances) sketchKeys.push(`${base}:t:${hour}:${instance}`);
    });
    const views: SketchView[] = [];
    if (sketchKeys.length > 0) {
      const read = this.client.pipeline();
      for (const key of sketchKeys) read.hgetall(key);
      for (const [, fields] of (await read.exec()) ?? []) views.push(sketchView((fields ?? {}) as Record<string, string>));
    }
    return { histogram, denied, shadowDenied, timeline, top: mergeSketches(views) };
  }
}

function sketchView(fields: Record<string, string>): SketchView {
  const entries: SketchView['entries'][number][] = [];
  for (const [identity, value] of Object.entries(fields)) {
    if (identity === FLOOR_FIELD) continue;
    const [count, error] = value.split(' ').map(Number);
    if (Number.isFinite(count) && Number.isFinite(error)) entries.push({ identity, count, error });
  }
  return { entries, floor: Number(fields[FLOOR_FIELD] ?? 0) || 0 };
}
