import {
  Inject,
  Injectable,
  InternalServerErrorException,
  Logger,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { RateLimitExceededException } from '../exceptions/rate-limit-exceeded.exception.js';
import { mostConstraining, rateLimitHeaders } from '../headers/rate-limit-headers.js';
import { RATE_LIMIT_CONFIG, type RateLimitConfig } from '../rate-limit.config.js';
import type { RoutePlan, RuleSet } from '../rules/route-plan.js';
import { RoutePlanner } from '../rules/route-planner.js';
import { RateLimitUnavailableException } from '../exceptions/rate-limit-unavailable.exception.js';
import type { StorageErrorPolicy } from '../rate-limit.options.js';
import { CircuitBreaker } from '../resilience/circuit-breaker.js';
import { ProtectedStorage } from '../resilience/protected-storage.js';
import { StorageUnavailableError } from '../resilience/storage-unavailable.error.js';
import { ThrottledLogger } from '../resilience/throttled-logger.js';
import { MemoryStorage } from '../storage/memory.storage.js';
import type { RateLimitResult } from '../storage/rate-limit-decision.js';
import {
  RATE_LIMIT_STORAGE,
  type RateLimitCheck,
  type RateLimitStorage,
} from '../storage/rate-limit-storage.interface.js';
import { isPromiseLike, then, type MaybePromise } from '../utils/maybe-async.js';

/** The `allow` policy's answer during an outage: let the request through, uncounted. */
const UNLIMITED = Symbol('unlimited');

/**
 * The global guard: route plan → client key → one storage call → headers, or a
 * {@link RateLimitExceededException}. Stays synchronous whenever every step is.
 */
@Injectable()
export class RateLimitGuard implements CanActivate {
  private readonly logger = new Logger(RateLimitGuard.name);
  private readonly outageLog = new ThrottledLogger(RateLimitGuard.name);
  private readonly storage: ProtectedStorage;
  /** The `memory` failure policy's stand-in, created on the first outage that needs it. */
  private fallback?: MemoryStorage;

  constructor(
    @Inject(RATE_LIMIT_CONFIG) private readonly config: RateLimitConfig,
    @Inject(RATE_LIMIT_STORAGE) storage: RateLimitStorage,
    private readonly planner: RoutePlanner,
    private readonly adapterHost: HttpAdapterHost,
  ) {
    this.storage = new ProtectedStorage(storage, config.storageTimeoutMs, new CircuitBreaker(config.circuitBreaker));
  }

  canActivate(context: ExecutionContext): MaybePromise<boolean> {
    if (context.getType() !== 'http') return true;
    return then(this.planner.planFor(context), (plan) => {
      if (plan.exempt) return true;
      const { skip } = this.config;
      return skip ? then(skip(context), (skipped) => skipped || this.limit(plan, context)) : this.limit(plan, context);
    });
  }

  private limit(plan: RoutePlan, context: ExecutionContext): MaybePromise<boolean> {
    const { cost } = plan;
    return then(this.guarded('key resolver', context, () => plan.keyBase(context)), (base) =>
      then(this.guarded('rate function', context, () => plan.ruleSet(context)), (rules) =>
        then(typeof cost === 'number' ? cost : this.guarded('cost function', context, () => cost(context)), (units) => {
          const checks = rules.rules.map((rule) => ({ key: base + rule.keySuffix, rule }));
          return then(this.consult(plan, checks, units), (result) =>
            result === UNLIMITED ? true : this.decide(result, rules, units, context),
          );
        }),
      ),
    );
  }

  private decide(result: RateLimitResult, rules: RuleSet, cost: number, context: ExecutionContext): true {
    const headers = rateLimitHeaders(this.config.headers, result, rules.policy);
    const response = context.switchToHttp().getResponse();
    for (const [name, value] of headers) this.adapterHost.httpAdapter.setHeader(response, name, value);
    if (result.allowed) return true;
    const worst = mostConstraining(result.decisions);
    throw new RateLimitExceededException(
      {
        rule: worst.rule,
        limit: worst.limit,
        remaining: worst.remaining,
        retryAfterMs: worst.retryAfterMs,
        resetMs: worst.resetMs,
        resetAt: result.now + worst.resetMs,
        cost,
      },
      worst.retryAfterMs === Infinity
        ? `${this.config.errorMessage}: this request costs ${cost}, more than the ${worst.rule.capacity} that "${worst.rule.name}" can ever admit`
        : this.config.errorMessage,
      headers,
    );
  }

  /** One storage call; if the storage cannot answer, the route's failure policy decides. */
  private consult(plan: RoutePlan, checks: RateLimitCheck[], cost: number): MaybePromise<RateLimitResult | typeof UNLIMITED> {
    const onFailure = (error: unknown) => this.applyFailurePolicy(plan.onStorageError, error, checks, cost);
    try {
      const answer = this.storage.check(checks, cost);
      return isPromiseLike(answer) ? answer.catch(onFailure) : answer;
    } catch (error) {
      return onFailure(error);
    }
  }

  private applyFailurePolicy(
    policy: StorageErrorPolicy,
    error: unknown,
    checks: RateLimitCheck[],
    cost: number,
  ): RateLimitResult | typeof UNLIMITED {
    if (!(error instanceof StorageUnavailableError)) throw error;
    this.outageLog.warn(`${error.message}; applying the '${policy}' failure policy`);
    if (policy === 'allow') return UNLIMITED;
    if (policy === 'deny') throw new RateLimitUnavailableException(this.storage.breaker.retryInMs || 1_000);
    this.fallback ??= new MemoryStorage();
    return this.fallback.check(checks, cost);
  }

  /**
   * Runs user code (key resolvers, rate functions). If it fails, the request fails with a 500
   * and a logged error: an unidentifiable request must never pass unlimited.
   */
  private guarded<T>(what: string, context: ExecutionContext, run: () => MaybePromise<T>): MaybePromise<T> {
    const fail = (error: unknown): never => {
      const route = `${context.getClass().name}.${context.getHandler().name}`;
      this.logger.error(`Rate limit ${what} failed on ${route}; the request was refused.`, (error as Error)?.stack ?? String(error));
      throw new InternalServerErrorException();
    };
    try {
      const value = run();
      return isPromiseLike(value) ? value.catch(fail) : value;
    } catch (error) {
      return fail(error);
    }
  }
}
