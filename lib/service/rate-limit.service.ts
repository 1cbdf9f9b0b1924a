import { Inject, Injectable, Optional } from '@nestjs/common';
import { assertUnits } from '../decorators/rate-limit.decorator.js';
import { denial } from '../exceptions/denial.js';
import { RateLimitUnavailableException } from '../exceptions/rate-limit-unavailable.exception.js';
import { withoutStack } from '../exceptions/without-stack.js';
import { RATE_LIMIT_METRICS, RateLimitMetrics } from '../observability/rate-limit-metrics.js';
import { StorageUnavailableError } from '../resilience/storage-unavailable.error.js';
import { mostConstraining } from '../headers/rate-limit-headers.js';
import { RATE_LIMIT_CONFIG, type RateLimitConfig } from '../rate-limit.config.js';
import { CircuitBreaker } from '../resilience/circuit-breaker.js';
import { ProtectedStorage } from '../resilience/protected-storage.js';
import type { MaybePromise } from '../utils/maybe-async.js';
import { bindRules } from '../rules/bind-rules.js';
import { parseDuration, parseRate, type ParsedRate } from '../rules/parse-rate.js';
import { RoutePlanner } from '../rules/route-planner.js';
import { RuleSet } from '../rules/rule-set.js';
import type { RateLimitResult } from '../storage/rate-limit-decision.js';
import { RATE_LIMIT_STORAGE, type RateLimitCheck, type RateLimitStorage, type StorageDeadline } from '../storage/rate-limit-storage.interface.js';
import type { RateLimitStatus, RateLimitTarget, RateLimitTargetOptions } from './rate-limit-target.js';
import { LimitAdvisor } from '../advisor/limit-advisor.js';
import type { AdvisorReport } from '../advisor/advisor-report.js';
import type { AdvisorQuery } from '../advisor/policy-report.js';

/** Distinct targets whose rules are kept, parsed, before the cache starts over. */
const TARGET_CACHE_SIZE = 256;
/** A rate string has a `/` or the word `per`; a bucket name has neither. */
const LOOKS_LIKE_RATE = /\/|\sper\s/i;

/**
 * Limits from code: read, charge, refund, reset or block a client's usage of a limit, with the
 * same rules, storage and keys as the decorated routes. Each method is one storage call, atomic
 * in the storage; `reset` and `block` hold on every app instance sharing it. A storage that
 * cannot answer within `storageTimeout` makes the call reject with StorageUnavailableError.
 *
 * `identity` is what the route's key resolver yields: `ip:<address>` for the default IP key.
 */
@Injectable()
export class RateLimitService {
  private readonly ruleSets = new Map<string, RuleSet>();
  /** The guard's deadline and a circuit breaker of its own: a caller never waits on a stuck storage. */
  private readonly bounded: ProtectedStorage;

  constructor(
    @Inject(RATE_LIMIT_CONFIG) private readonly config: RateLimitConfig,
    @Inject(RATE_LIMIT_STORAGE) private readonly storage: RateLimitStorage,
    private readonly planner: RoutePlanner,
    @Optional() @Inject(RATE_LIMIT_METRICS) private readonly metrics: RateLimitMetrics = RateLimitMetrics.disabled(),
    @Optional() private readonly advisor?: LimitAdvisor,
  ) {
    this.bounded = new ProtectedStorage(storage, config.storageTimeoutMs, new CircuitBreaker(config.circuitBreaker));
  }

  /**
   * The limit advisor's report: per policy, what its limit and each candidate would have refused
   * over the period (default the last hour), a suggested limit for `target` (default 0.1% of
   * clients), and the heaviest identities. Every instance's traffic on Redis, this process's
   * otherwise. Needs the module's `advisor` option.
   */
  advisorReport(query: AdvisorQuery = {}): Promise<AdvisorReport> {
    if (this.advisor?.enabled !== true) {
      return Promise.reject(new Error('RateLimitService.advisorReport: the limit advisor is off; turn it on with RateLimitModule.forRoot({ advisor: true }).'));
    }
    return this.advisor.report(query);
  }

  /** Charges `cost` units and answers the decision; a denial is returned, not thrown. */
  async consume(identity: string, target: RateLimitTarget, cost = 1): Promise<RateLimitStatus> {
    assertUnits('cost', cost);
    return status(await this.bounded.check(this.checks(identity, target), cost));
  }

  /**
   * Charges `cost` units as `consume` does, and throws the refusal the guard would
   * (`RateLimitExceededException`: a 429 with `Retry-After` and the rate-limit headers of the
   * target, through the module's filter) when they are denied. For a limit only the handler can
   * key, such as one per account named in the body. It fails closed: a storage that cannot answer
   * throws the 503 the `deny` failure policy gives (`RateLimitUnavailableException`), since what
   * cannot be counted must not pass; catch it to decide otherwise.
   */
  async enforce(identity: string, target: RateLimitTarget, cost = 1): Promise<RateLimitStatus> {
    assertUnits('cost', cost);
    const ruleSet = this.ruleSet(target);
    let result: RateLimitResult;
    try {
      result = await this.bounded.check(this.checks(identity, target), cost);
    } catch (error) {
      if (!(error instanceof StorageUnavailableError)) throw error;
      if (this.metrics.enabled) this.metrics.request('fail_closed', ruleSet.rules[0]?.name ?? '');
      throw withoutStack(() => new RateLimitUnavailableException(this.bounded.breaker.retryInMs || 1_000, undefined, this.config.problemDetails));
    }
    const worst = mostConstraining(result.decisions);
    if (this.metrics.enabled) this.metrics.request(result.allowed ? 'allowed' : 'denied', worst.rule.name, worst.remaining, worst.limit);
    if (!result.allowed) throw denial(this.config, result, ruleSet.policy, cost);
    return status(result);
  }

  /** The decision a request of `cost` would get now, charging nothing; `remaining` is what is left now. */
  async peek(identity: string, target: RateLimitTarget, cost = 1): Promise<RateLimitStatus> {
    assertUnits('cost', cost);
    const checks = this.checks(identity, target);
    return status(await this.run('peek', (storage, deadline) => storage.peek?.(checks, cost, deadline)));
  }

  /** Gives `units` back (never beyond a fresh state); answers what a peek then sees. */
  async reward(identity: string, target: RateLimitTarget, units = 1): Promise<RateLimitStatus> {
    assertUnits('cost', units);
    const checks = this.checks(identity, target);
    return status(await this.run('adjust', (storage, deadline) => storage.adjust?.(checks, -units, deadline)));
  }

  /** Takes `units` more, even past the limit (the client then waits longer); answers what a peek then sees. */
  async penalize(identity: string, target: RateLimitTarget, units = 1): Promise<RateLimitStatus> {
    assertUnits('cost', units);
    const checks = this.checks(identity, target);
    return status(await this.run('adjust', (storage, deadline) => storage.adjust?.(checks, units, deadline)));
  }

  /** Forgets the client's usage of the limit, and any block, on every instance. */
  async reset(identity: string, target: RateLimitTarget): Promise<void> {
    const checks = this.checks(identity, target);
    await this.run('reset', (storage, deadline) => storage.reset?.(checks, deadline));
  }

  /** Denies the client on the limit for `duration` (`'15 minutes'`, or ms), on every instance; its usage is dropped. */
  async block(identity: string, target: RateLimitTarget, duration: string | number): Promise<void> {
    const checks = this.checks(identity, target);
    const durationMs = parseDuration(duration);
    await this.run('block', (storage, deadline) => storage.block?.(checks, durationMs, deadline));
  }

  /**
   * One call of a storage method, bounded: a storage that fails, hangs or whose circuit is open
   * rejects with StorageUnavailableError within the module's `storageTimeout`. A call that
   * rejected never takes effect later on a storage that holds its calls to their deadline
   * (RedisStorage), so it is safe to retry.
   */
  private async run<T>(method: 'peek' | 'adjust' | 'reset' | 'block', operation: (storage: RateLimitStorage, deadline: StorageDeadline) => MaybePromise<T> | undefined): Promise<T> {
    if (typeof this.storage[method] !== 'function') {
      throw new Error(`RateLimitService: the storage ${this.storage.constructor.name} has no ${method}() method.`);
    }
    return (await this.bounded.call((deadline) => operation(this.storage, deadline)!, `RateLimitService.${method === 'adjust' ? 'reward or penalize' : method}`)) as T;
  }

  private checks(identity: string, target: RateLimitTarget): readonly RateLimitCheck[] {
    if (typeof identity !== 'string' || identity === '') {
      throw new TypeError(`RateLimitService: identity must be a non-empty string (e.g. 'ip:203.0.113.7'), got ${JSON.stringify(identity)}`);
    }
    return this.ruleSet(target).checksFor(identity);
  }

  /** The rules of a target, parsed once per distinct target. */
  private ruleSet(target: RateLimitTarget): RuleSet {
    const options: RateLimitTargetOptions =
      typeof target === 'string' ? (LOOKS_LIKE_RATE.test(target) ? { rate: target } : { bucket: target }) : isRateList(target) ? { rate: target } : target;
    const rateText = options.rate === undefined ? '' : typeof options.rate === 'string' ? options.rate : options.rate.join(';');
    const cacheKey = `${options.bucket ?? ''}|${rateText}|${options.algorithm ?? ''}|${options.burst ?? ''}|${options.blockFor ?? ''}`;
    let ruleSet = this.ruleSets.get(cacheKey);
    if (ruleSet !== undefined) return ruleSet;
    ruleSet = this.compile(options);
    if (this.ruleSets.size >= TARGET_CACHE_SIZE) this.ruleSets.clear();
    this.ruleSets.set(cacheKey, ruleSet);
    return ruleSet;
  }

  private compile({ rate, bucket, algorithm, burst, blockFor }: RateLimitTargetOptions): RuleSet {
    const declared = bucket === undefined ? undefined : this.planner.bucket(bucket);
    if (rate === undefined) {
      if (bucket === undefined) throw new Error('RateLimitService: name a bucket or give a rate, e.g. { bucket: "login" } or "5/minute".');
      if (declared === undefined) {
        throw new Error(`RateLimitService: no decorated route uses the bucket "${bucket}"; name a route's bucket (or Controller.method), or pass { bucket, rate }.`);
      }
      if (declared === 'ambiguous') throw new Error(`RateLimitService: routes use the bucket "${bucket}" with different limits; pass { bucket, rate }.`);
      if (typeof declared.rate === 'function') {
        throw new Error(`RateLimitService: the routes of bucket "${bucket}" choose their rate per request; pass { bucket, rate }.`);
      }
    }
    const known = declared === 'ambiguous' ? undefined : declared;
    const rates: readonly ParsedRate[] = rate !== undefined ? parseRate(rate) : (known!.rate as readonly ParsedRate[]);
    const name = bucket ?? rates.map((r) => r.text).join(';');
    const rules = bindRules(rates, {
      name,
      bucket: this.planner.bucketKey(name),
      algorithm: algorithm ?? known?.algorithm ?? this.config.algorithm,
      burst: burst ?? known?.burst,
      blockMs: blockFor !== undefined ? parseDuration(blockFor) : (known?.blockMs ?? 0),
    });
    return new RuleSet(rules, this.config.keyPrefix);
  }
}

function isRateList(target: RateLimitTarget): target is readonly string[] {
  return Array.isArray(target);
}

function status(result: RateLimitResult): RateLimitStatus {
  const worst = mostConstraining(result.decisions);
  return {
    allowed: result.allowed,
    limit: worst.limit,
    remaining: worst.remaining,
    retryAfterMs: worst.retryAfterMs,
    resetMs: worst.resetMs,
    resetAt: result.now + worst.resetMs,
    decisions: result.decisions,
  };
}
