import { randomBytes } from 'node:crypto';
import { Inject, Injectable, Optional, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { RATE_LIMIT_CONFIG, type RateLimitConfig } from '../rate-limit.config.js';
import { RATE_LIMIT_METRICS, RateLimitMetrics } from '../observability/rate-limit-metrics.js';
import { ThrottledLogger } from '../resilience/throttled-logger.js';
import type { RateLimitRule } from '../rules/rate-limit-rule.js';
import type { RateLimitResult } from '../storage/rate-limit-decision.js';
import { RATE_LIMIT_STORAGE, type ObservedCheck, type RateLimitCheck, type RateLimitStorage } from '../storage/rate-limit-storage.interface.js';
import { RedisStorage } from '../storage/redis.storage.js';
import type { AdvisorReport, AdvisorTimelinePoint } from './advisor-report.js';
import { AdvisorStore } from './advisor-store.js';
import { identityOfKey, mergeSketches, redactIdentity } from './heavy-hitters.js';
import { checkQuery, DEFAULT_PERIOD_MS, policyReport, type AdvisorQuery, type PolicyFigures } from './policy-report.js';
import { PolicyUsage } from './policy-usage.js';
import { ObservationLog, REFUSED, SHADOW } from './observation-log.js';
import { UsageHistogram } from './usage-histogram.js';

/**
 * The limit advisor: learns, per policy, how many units each client attempts per window, from
 * the count the storage returns with every check of an observed rule (`RateLimitDecision.attempts`),
 * and answers what any candidate limit would have refused (`report`).
 *
 * On the request path: one entry per observed check in a log (ObservationLog), recorded into the
 * histograms and sketches many at a time; nothing when the advisor is off (the guard asks
 * `RuleSet.observed` first). On Redis,
 * each instance adds its figures to shared counters every `flushInterval`, off the request
 * path, and reports read them back, so the figures are every instance's, summed exactly.
 */
@Injectable()
export class LimitAdvisor implements OnApplicationBootstrap, OnApplicationShutdown {
  /** Policies by rule, for the request path; and by storage id, since routes may share a budget. */
  private readonly byRule = new Map<RateLimitRule, PolicyUsage>();
  private readonly byId = new Map<string, PolicyUsage>();
  private readonly store?: AdvisorStore;
  /** This process, among the instances whose sketches Redis keeps. */
  private readonly instance = randomBytes(6).toString('hex');
  private timer?: NodeJS.Timeout;
  private flushing?: Promise<void>;
  private readonly flushLog = new ThrottledLogger(LimitAdvisor.name);
  /** Observations not yet recorded (see ObservationLog). */
  private readonly log = new ObservationLog();

  constructor(
    @Inject(RATE_LIMIT_CONFIG) private readonly config: RateLimitConfig,
    @Inject(RATE_LIMIT_STORAGE) storage: RateLimitStorage,
    @Optional() @Inject(RATE_LIMIT_METRICS) private readonly metrics: RateLimitMetrics = RateLimitMetrics.disabled(),
  ) {
    if (config.advisor !== undefined && storage instanceof RedisStorage) this.store = new AdvisorStore(storage.client, config.keyPrefix);
  }

  /** Whether the advisor is on. */
  get enabled(): boolean {
    return this.config.advisor !== undefined;
  }

  /** `shared` when the figures are every instance's (Redis), `instance` when they are this process's. */
  get scope(): AdvisorReport['scope'] {
    return this.store === undefined ? 'instance' : 'shared';
  }

  onApplicationBootstrap(): void {
    const advisor = this.config.advisor;
    if (advisor === undefined) return;
    if (this.store !== undefined) {
      this.timer = setInterval(() => void this.flush().catch(() => undefined), advisor.flushIntervalMs);
      this.timer.unref();
    }
    this.metrics.observeClientUsage((observe) => {
      this.drain();
      for (const usage of this.byId.values()) {
        const totals = usage.reachedBefore.slice();
        for (const bucket of usage.buckets) for (let k = 0; k < totals.length; k++) totals[k] += bucket.histogram.reached[k];
        usage.meta.thresholds.forEach((threshold, k) => observe(totals[k], usage.meta.name, threshold));
      }
    });
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    // what this instance saw since its last flush would be lost otherwise
    await this.flush().catch(() => undefined);
  }

  /** One decided check of a rule set the advisor follows; `shadow`: refusals were let through. */
  observe(checks: readonly RateLimitCheck[], result: RateLimitResult, cost: number, shadow: boolean): void {
    const { decisions } = result;
    // a denial from the block cache carries one decision and no counts: nothing to learn
    if (decisions.length !== checks.length) return;
    for (let i = 0; i < decisions.length; i++) {
      const decision = decisions[i];
      const attempts = decision.attempts;
      // a rule set builds an observed rule's check with the advisor's fields (RuleSet.build)
      const check = checks[i] as ObservedCheck;
      if (attempts === undefined || check.sketchHash === undefined) continue;
      const flags = (decision.allowed ? 0 : REFUSED) | (shadow ? SHADOW : 0);
      if (this.log.add(check, result.now, attempts, cost, flags)) this.drain();
    }
  }

  /** Records the logged observations into their policies' figures, in the order they came. */
  drain(): void {
    const { log } = this;
    const { figures, flags, size } = log;
    // emptied first: whatever happens below, no observation is recorded twice
    log.size = 0;
    for (let at = 0; at < size; at++) {
      let usage = log.policies[at] as PolicyUsage | undefined;
      if (usage === undefined) {
        // the check's first observation: the only time it is read again
        const check = log.checks[at]!;
        usage = check.advisorPolicy as PolicyUsage | undefined;
        usage ??= check.advisorPolicy = this.byRule.get(check.rule) ?? this.policyOf(check.rule, (flags[at] & SHADOW) !== 0);
      }
      const f = at * 4;
      usage.record(figures[f], figures[f + 1], figures[f + 2], (flags[at] & REFUSED) !== 0, (flags[at] & SHADOW) !== 0, log.keys[at]!, figures[f + 3]);
      log.checks[at] = log.policies[at] = log.keys[at] = undefined;
    }
  }

  /** Adds what this instance saw to Redis now (without Redis: nothing to do). Reports call it first. */
  flush(): Promise<void> {
    this.drain();
    const store = this.store;
    if (store === undefined) return Promise.resolve();
    // one flush at a time: two would send the same deltas twice
    this.flushing ??= this.flushAll(store).finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  /** What each policy's limit, and any candidate, would have refused over the period. */
  async report(query: AdvisorQuery = {}, now = (this.config.advisor?.clock ?? Date.now)()): Promise<AdvisorReport> {
    checkQuery(query);
    const periodMs = query.periodMs ?? DEFAULT_PERIOD_MS;
    const figures: PolicyFigures[] = [];
    if (this.store !== undefined) {
      await this.flush();
      for (const meta of await this.store.policies()) {
        // the mode of a policy this instance serves is known here; another's as it described it
        const local = this.byId.get(meta.id);
        figures.push({ meta: local?.meta ?? meta, ...(await this.store.figures(meta, now, periodMs)) });
      }
    } else {
      this.drain();
      for (const usage of this.byId.values()) figures.push(this.localFigures(usage, now, periodMs));
    }
    return {
      generatedAt: new Date(now).toISOString(),
      periodSeconds: periodMs / 1000,
      scope: this.scope,
      policies: figures.map((entry) => policyReport(entry, query)),
    };
  }

  private policyOf(rule: RateLimitRule, shadow: boolean): PolicyUsage {
    let usage = this.byId.get(rule.keySuffix);
    if (usage === undefined) {
      usage = new PolicyUsage(rule, shadow ? 'shadow' : 'enforce', this.config.advisor?.trackedIdentities ?? 128);
      this.byId.set(rule.keySuffix, usage);
    }
    this.byRule.set(rule, usage);
    return usage;
  }

  private async flushAll(store: AdvisorStore): Promise<void> {
    const shown = (key: string) => this.shown(identityOfKey(key));
    try {
      for (const usage of this.byId.values()) {
        // every time: a Redis that lost it (a restart, FLUSHDB, eviction) must learn it again
        await store.describe(usage.meta);
        await store.flush(usage, this.instance, shown);
      }
    } catch (error) {
      this.flushLog.warn(`Could not add the limit advisor's figures to Redis; they are kept and sent with the next flush: ${(error as Error)?.message ?? String(error)}`);
      throw error;
    }
  }

  private localFigures(usage: PolicyUsage, now: number, periodMs: number): PolicyFigures {
    const { meta } = usage;
    const since = now - periodMs;
    const histogram = new UsageHistogram(meta.thresholds);
    const timeline: AdvisorTimelinePoint[] = [];
    let denied = 0;
    let shadowDenied = 0;
    for (const bucket of usage.bucketsSince(since)) {
      if (bucket.index * meta.bucketMs > now) continue;
      histogram.merge(bucket.histogram);
      denied += bucket.denied;
      shadowDenied += bucket.shadowDenied;
      timeline.push({ start: new Date(bucket.index * meta.bucketMs).toISOString(), requests: bucket.histogram.requests, denied: bucket.denied, shadowDenied: bucket.shadowDenied });
    }
    const views = usage.sketchesSince(since).map((sketch) => ({
      entries: sketch.top(sketch.capacity).map((entry) => ({ ...entry, identity: this.shown(identityOfKey(entry.identity)) })),
      floor: sketch.floor,
    }));
    return { meta, histogram, denied, shadowDenied, timeline: fillGaps(timeline, meta.bucketMs), top: mergeSketches(views) };
  }

  private shown(identity: string): string {
    const key = this.config.advisor?.redactKey;
    return key === undefined ? identity : redactIdentity(identity, key);
  }
}

/** Buckets with no traffic between two that had some, as zeros, so a chart's time axis is even. */
function fillGaps(points: AdvisorTimelinePoint[], bucketMs: number): AdvisorTimelinePoint[] {
  if (points.length < 2) return points;
  const out: AdvisorTimelinePoint[] = [];
  const byStart = new Map(points.map((point) => [point.start, point]));
  const first = Date.parse(points[0].start);
  const last = Date.parse(points[points.length - 1].start);
  for (let at = first; at <= last; at += bucketMs) {
    const start = new Date(at).toISOString();
    out.push(byStart.get(start) ?? { start, requests: 0, denied: 0, shadowDenied: 0 });
  }
  return out;
}
