import { Inject, Injectable } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
// Types only: @nestjs/terminus is an optional peer, loaded when a health check first runs.
import type { HealthIndicatorService } from '@nestjs/terminus';
import { RateLimitGuard } from '../guards/rate-limit.guard.js';
import { RATE_LIMIT_CONFIG, type RateLimitConfig } from '../rate-limit.config.js';
import type { CircuitState } from '../resilience/circuit-breaker.js';
import { RATE_LIMIT_STORAGE, type RateLimitStorage } from '../storage/rate-limit-storage.interface.js';
import { isPromiseLike } from '../utils/maybe-async.js';
import { storageKindOf } from '../storage/storage-kind.js';
import { RedisStorage } from '../storage/redis.storage.js';

/** What the limiter's health check reports, besides terminus's `status`. */
export interface RateLimitHealthDetails {
  /** `memory`, `redis`, `cluster` (RedisStorage on a Cluster client), or a custom storage's class name. */
  storage: string;
  /**
   * The storage's answer to `ping()`, in ms; `null` when it gave none (it failed, timed out, or the
   * storage has no `ping`).
   */
  latencyMs: number | null;
  /** The guard's circuit breaker in front of the storage. */
  circuit: CircuitState;
  /**
   * RedisStorage with a block cache: whether resets and refunds made on other instances reach
   * this one (`subscribed`), or not (`unsubscribed`: its subscription is down, and its block
   * cache trusts a denial for a second at most, so a reset elsewhere still takes effect here
   * within that second). Absent otherwise. Reported, not judged: the storage is up either way.
   */
  invalidations?: 'subscribed' | 'unsubscribed';
  /** Only when down: why. */
  reason?: 'timeout' | 'error' | 'circuit-open';
  /** Only when down: the same, for people. */
  message?: string;
}

/**
 * The same shape as terminus's `HealthIndicatorResult<Key>`, spelled out here so that the
 * library's declarations do not need `@nestjs/terminus` installed.
 */
export type RateLimitHealthResult<Key extends string = 'ratelimit'> = Record<Key, { status: 'up' | 'down' } & RateLimitHealthDetails>;

/**
 * A `@nestjs/terminus` health indicator for the rate limiter's storage:
 *
 * ```ts
 * @Get('health')
 * @SkipRateLimit()
 * @HealthCheck()
 * check() {
 *   return this.health.check([() => this.rateLimit.isHealthy()]);
 * }
 * ```
 *
 * Up when the storage answers a `ping()` within `storageTimeout` and the guard's circuit breaker
 * is not open; down otherwise. Memory storage is always up. A storage without `ping()` is judged
 * by the circuit breaker alone, which real traffic drives.
 *
 * The check never goes through the circuit breaker, so polling it neither opens nor closes the
 * circuit: the breaker keeps reflecting real traffic.
 */
@Injectable()
export class RateLimitHealthIndicator {
  private indicators?: HealthIndicatorService;

  constructor(
    @Inject(RATE_LIMIT_STORAGE) private readonly storage: RateLimitStorage,
    @Inject(RATE_LIMIT_CONFIG) private readonly config: RateLimitConfig,
    private readonly guard: RateLimitGuard,
    private readonly moduleRef: ModuleRef,
  ) {}

  /**
   * The storage's health under `key`: `up` with `{ storage, latencyMs, circuit }`, or `down` with
   * the same and a `reason`. Answers within `storageTimeout`, even from a frozen Redis.
   * Throws if `@nestjs/terminus` is not installed.
   */
  async isHealthy<const Key extends string = 'ratelimit'>(key: Key = 'ratelimit' as Key): Promise<RateLimitHealthResult<Key>> {
    const session = (await this.healthIndicatorService()).check(key);
    const ping = await this.ping();
    const details: RateLimitHealthDetails = {
      storage: storageKindOf(this.storage),
      latencyMs: ping.ok ? ping.latencyMs : null,
      circuit: this.guard.circuitState,
    };
    const invalidations = this.storage instanceof RedisStorage ? this.storage.invalidationsReceived : undefined;
    if (invalidations !== undefined) details.invalidations = invalidations ? 'subscribed' : 'unsubscribed';
    let result: unknown;
    if (!ping.ok) {
      result = session.down({ ...details, reason: ping.reason, message: ping.message });
    } else if (details.circuit === 'open') {
      // the storage answers, but the guard is not asking it until its cool-down ends
      const message = 'the circuit breaker is open after repeated storage failures: the failure policy answers';
      result = session.down({ ...details, reason: 'circuit-open', message });
    } else {
      result = session.up({ ...details });
    }
    return result as RateLimitHealthResult<Key>;
  }

  /** One ping, bounded by `storageTimeout`; never rejects. */
  private async ping(): Promise<PingOutcome> {
    const { storage } = this;
    if (storage.ping === undefined) return { ok: true, latencyMs: null };
    const timeoutMs = this.config.storageTimeoutMs;
    const startedAt = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let answered = false;
    try {
      const answer = storage.ping();
      if (isPromiseLike(answer)) {
        const late = new Promise<'late'>((resolve) => {
          // As the guard's deadline: I/O is polled before setImmediate, so a reply that already
          // arrived is read before the ping is called late; and while this process itself ran too
          // late to read one (a starved CPU), it waits another period, up to the guard's cap. A
          // health check that fails for our own slowness could get a healthy instance pulled.
          const maxWaitMs = Math.max(1_000, 10 * timeoutMs);
          let since = startedAt;
          const expire = () => {
            if (answered) return;
            const now = performance.now();
            if (now - since > timeoutMs * 1.5 && now - startedAt < maxWaitMs) {
              since = now;
              timer = setTimeout(onTimer, timeoutMs);
            } else {
              resolve('late');
            }
          };
          const onTimer = () => setImmediate(expire);
          timer = setTimeout(onTimer, timeoutMs);
        });
        // race() also handles a rejection that comes after the deadline
        if ((await Promise.race([answer, late])) === 'late') {
          return { ok: false, reason: 'timeout', message: `the storage did not answer a ping within ${timeoutMs} ms (storageTimeout)` };
        }
      }
    } catch (error) {
      return { ok: false, reason: 'error', message: `the storage failed a ping: ${(error as Error)?.message ?? String(error)}` };
    } finally {
      answered = true;
      clearTimeout(timer);
    }
    return { ok: true, latencyMs: Math.round((performance.now() - startedAt) * 100) / 100 };
  }

  /**
   * Terminus's own service when the app imports `TerminusModule`, else one of ours (it holds no
   * state a check of ours uses). Loaded on first use, so that apps without terminus can load
   * the library.
   */
  private async healthIndicatorService(): Promise<HealthIndicatorService> {
    if (this.indicators) return this.indicators;
    let terminus: typeof import('@nestjs/terminus');
    try {
      terminus = await import('@nestjs/terminus');
    } catch (error) {
      throw new Error(
        'RateLimitHealthIndicator needs @nestjs/terminus (11 or later), an optional peer dependency of nestjs-rate-limiting: ' +
          `npm install @nestjs/terminus (${String((error as Error)?.message ?? error).split('\n')[0]})`,
        { cause: error },
      );
    }
    try {
      this.indicators = this.moduleRef.get(terminus.HealthIndicatorService, { strict: false });
    } catch {
      // no TerminusModule in the app
    }
    this.indicators ??= new terminus.HealthIndicatorService();
    return this.indicators;
  }
}

type PingOutcome =
  | { ok: true; latencyMs: number | null }
  | { ok: false; reason: 'timeout' | 'error'; message: string };
