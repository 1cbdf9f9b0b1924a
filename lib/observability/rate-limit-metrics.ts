import type { Attributes, Counter, Histogram, Meter, ObservableResult } from '@opentelemetry/api';
import type { CircuitState } from '../resilience/circuit-breaker.js';
import type { RateLimitStorage } from '../storage/rate-limit-storage.interface.js';
import { RedisStorage } from '../storage/redis.storage.js';
import { storageKindOf } from '../storage/storage-kind.js';

/** How one request ended, as far as the limiter is concerned. */
export type RateLimitOutcome = 'allowed' | 'denied' | 'shadow_denied' | 'fail_open' | 'fail_closed' | 'fallback';

/** What became of a denied microservice event (see DeniedEvents). */
export type DeniedEventAction = 'dropped' | 'requeued' | 'dead-lettered';

/** The meter's name: the package's. */
export const METER_NAME = 'nestjs-rate-limiting';

/** Injection token of the module's {@link RateLimitMetrics}. */
export const RATE_LIMIT_METRICS = Symbol('RATE_LIMIT_METRICS');

/** Allowed checks that leave less than this share of the quota count as near the limit. */
const NEAR_LIMIT_SHARE = 0.2;

const CIRCUIT_VALUES: Readonly<Record<CircuitState, number>> = { closed: 0, open: 1, 'half-open': 2 };

/**
 * The module's OpenTelemetry instruments. `@opentelemetry/api` is an optional peer: without it,
 * or without an SDK registered when the module starts, `enabled` is false and the guard calls
 * nothing here, so metrics that are off cost a request one property read.
 */
export class RateLimitMetrics {
  /** Attribute objects by policy and outcome, built once: recording allocates nothing. */
  private readonly attributes = new Map<string, Attributes>();
  private readonly requests?: Counter;
  private readonly nearLimit?: Counter;
  private readonly storageDuration?: Histogram;
  private readonly storageErrors?: Counter;
  private readonly deniedEvents?: Counter;
  private readonly storageAttributes: Attributes;
  private readonly stops: (() => void)[] = [];
  /** A field, not a getter: the guard reads it on every request. */
  readonly enabled: boolean;

  private constructor(
    private readonly meter: Meter | undefined,
    storageKind: string,
  ) {
    this.enabled = meter !== undefined;
    this.storageAttributes = { 'ratelimit.storage': storageKind };
    if (meter === undefined) return;
    this.requests = meter.createCounter('ratelimit.requests', { description: 'Requests the limiter decided, by policy and outcome', unit: '{request}' });
    this.nearLimit = meter.createCounter('ratelimit.near_limit', { description: 'Allowed requests that left less than 20% of the quota', unit: '{request}' });
    this.storageDuration = meter.createHistogram('ratelimit.storage.duration', {
      description: 'One storage call',
      unit: 's',
      // the SDK's default buckets are for milliseconds; a storage call takes 0.1 ms to a timeout
      advice: { explicitBucketBoundaries: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1] },
    });
    this.storageErrors = meter.createCounter('ratelimit.storage.errors', { description: 'Storage calls that failed or timed out', unit: '{call}' });
    this.deniedEvents = meter.createCounter('ratelimit.events.denied', {
      description: 'Microservice events refused before their handler ran, by what became of them',
      unit: '{event}',
    });
  }

  /** Instruments on the global MeterProvider, or disabled ones if there is none (or no API). */
  static async create(storageKind: string): Promise<RateLimitMetrics> {
    const api = await import('@opentelemetry/api').catch(() => undefined);
    if (api === undefined) return RateLimitMetrics.disabled();
    const meter = api.metrics.getMeter(METER_NAME);
    // The API hands out a no-op meter until an SDK registers a provider: nothing would be recorded.
    if (meter.constructor === api.createNoopMeter().constructor) return RateLimitMetrics.disabled();
    return new RateLimitMetrics(meter, storageKind);
  }

  static disabled(): RateLimitMetrics {
    return new RateLimitMetrics(undefined, 'none');
  }

  /** One request's outcome; an allowed one that left under 20% of its quota also counts as near the limit. */
  request(outcome: RateLimitOutcome, policy: string, remaining?: number, limit?: number): void {
    this.requests?.add(1, this.attributesOf(policy, outcome));
    if (outcome === 'allowed' && remaining !== undefined && limit !== undefined && remaining < NEAR_LIMIT_SHARE * limit) {
      this.nearLimit?.add(1, this.attributesOf(policy, undefined));
    }
  }

  /** A refused event: dropped, or handed back to a broker that keeps it. */
  deniedEvent(action: DeniedEventAction, policy: string, transport: string): void {
    // rare and off the admitted path: built per call rather than cached
    this.deniedEvents?.add(1, { 'ratelimit.policy': policy, 'ratelimit.event.action': action, 'ratelimit.transport': transport });
  }

  storageCall(seconds: number): void {
    this.storageDuration?.record(seconds, this.storageAttributes);
  }

  storageError(): void {
    this.storageErrors?.add(1, this.storageAttributes);
  }

  /** The breaker's state as `ratelimit.circuit.state`: 0 closed, 1 open, 2 half-open. */
  observeCircuit(state: () => CircuitState): void {
    this.observe('ratelimit.circuit.state', 'Circuit breaker in front of the storage: 0 closed, 1 open, 2 half-open', () => CIRCUIT_VALUES[state()]);
  }

  /** Entries in the block cache, as `ratelimit.block_cache.size`. */
  observeBlockCache(size: () => number): void {
    this.observe('ratelimit.block_cache.size', 'Denials the block cache holds', size);
  }

  /** Whether the block cache hears of resets made elsewhere, as `ratelimit.block_cache.subscribed`: 1, or 0 while it cannot. */
  observeInvalidations(received: () => boolean | undefined): void {
    this.observe('ratelimit.block_cache.subscribed', 'Whether resets made on other instances reach the block cache: 1, or 0 while its subscription is down', () =>
      received() === false ? 0 : 1,
    );
  }

  /**
   * The limit advisor's usage distribution as `ratelimit.client_usage`, a counter per policy and
   * threshold: client-windows whose attempts reached `ratelimit.threshold`. Instances' counters
   * add up, so `increase(...[1h])` at threshold N+1 over that at 1 is the share of clients a
   * limit of N would have refused (docs/choosing-limits.md).
   */
  observeClientUsage(read: (observe: (value: number, policy: string, threshold: number) => void) => void): void {
    if (this.meter === undefined) return;
    const counter = this.meter.createObservableCounter('ratelimit.client_usage', {
      description: 'Client-windows whose attempts reached the threshold, by policy (the limit advisor)',
      unit: '{client}',
    });
    const callback = (result: ObservableResult) =>
      read((value, policy, threshold) => result.observe(value, { 'ratelimit.policy': policy, 'ratelimit.threshold': threshold }));
    counter.addCallback(callback);
    this.stops.push(() => counter.removeCallback(callback));
  }

  /** Stops the gauges: an app that closed must not keep reporting, nor be kept alive by the provider. */
  close(): void {
    for (const stop of this.stops.splice(0)) stop();
  }

  private observe(name: string, description: string, read: () => number): void {
    if (this.meter === undefined) return;
    const gauge = this.meter.createObservableGauge(name, { description });
    const callback = (result: ObservableResult) => result.observe(read(), this.storageAttributes);
    gauge.addCallback(callback);
    this.stops.push(() => gauge.removeCallback(callback));
  }

  private attributesOf(policy: string, outcome: RateLimitOutcome | undefined): Attributes {
    const id = outcome === undefined ? policy : `${policy}\n${outcome}`;
    let attributes = this.attributes.get(id);
    if (attributes === undefined) {
      attributes = outcome === undefined ? { 'ratelimit.policy': policy } : { 'ratelimit.policy': policy, 'ratelimit.outcome': outcome };
      // policy names come from the app's decorators, a bounded set; the guard keeps it so
      this.attributes.set(id, attributes);
    }
    return attributes;
  }
}

/** The module's metrics: instruments on the app's MeterProvider, the block cache's gauge included. */
export async function createRateLimitMetrics(storage: RateLimitStorage): Promise<RateLimitMetrics> {
  const metrics = await RateLimitMetrics.create(storageKindOf(storage));
  if (storage instanceof RedisStorage) {
    metrics.observeBlockCache(() => storage.blockCacheSize);
    if (storage.invalidationsReceived !== undefined) metrics.observeInvalidations(() => storage.invalidationsReceived);
  }
  return metrics;
}
