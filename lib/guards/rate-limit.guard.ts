import {
  Inject,
  Injectable,
  InternalServerErrorException,
  IntrinsicException,
  Logger,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { RateLimitExceededException } from '../exceptions/rate-limit-exceeded.exception.js';
import { RateLimitUnavailableException } from '../exceptions/rate-limit-unavailable.exception.js';
import { withoutStack } from '../exceptions/without-stack.js';
import { contextAdapterFor } from '../contexts/context-adapters.js';
import { httpContext } from '../contexts/http.context-adapter.js';
import { mostConstraining, rateLimitHeaders } from '../headers/rate-limit-headers.js';
import { RATE_LIMIT_CONFIG, type RateLimitConfig } from '../rate-limit.config.js';
import type { StorageErrorPolicy } from '../rate-limit.options.js';
import { CircuitBreaker, type CircuitState } from '../resilience/circuit-breaker.js';
import { ProtectedStorage } from '../resilience/protected-storage.js';
import { StorageUnavailableError } from '../resilience/storage-unavailable.error.js';
import { ThrottledLogger } from '../resilience/throttled-logger.js';
import type { RoutePlan } from '../rules/route-plan.js';
import { RoutePlanner } from '../rules/route-planner.js';
import type { RuleSet } from '../rules/rule-set.js';
import { MemoryStorage } from '../storage/memory.storage.js';
import type { RateLimitResult } from '../storage/rate-limit-decision.js';
import {
  RATE_LIMIT_STORAGE,
  type RateLimitCheck,
  type RateLimitStorage,
} from '../storage/rate-limit-storage.interface.js';
import { isPromiseLike, then, type MaybePromise } from '../utils/maybe-async.js';
import { whenFinished } from '../outcomes/request-outcome.js';

/**
 * The arguments of RPC messages checked so far. A message meets the guard twice when it runs both
 * as a global guard and as its handler's own (TransportEnhancers); shared by every instance,
 * since the handler's may come from another app built in the same process.
 */
const checkedMessages = new WeakSet<object>();

/** The `allow` policy's answer during an outage: let the request through, uncounted. */
const UNLIMITED = Symbol('unlimited');

/**
 * The global guard: route plan → identity → rules → one storage call → headers, or a
 * {@link RateLimitExceededException}. Each step continues synchronously when its input is
 * ready, so a route on memory storage pays no promise and allocates no closure.
 */
@Injectable()
export class RateLimitGuard implements CanActivate {
  private readonly logger = new Logger(RateLimitGuard.name);
  private readonly outageLog = new ThrottledLogger(RateLimitGuard.name);
  private readonly storage: ProtectedStorage;
  /** The `memory` failure policy's stand-in, created on the first outage that needs it. */
  private fallback?: MemoryStorage;
  /** Limited handlers already reported as running where no context adapter serves. */
  private readonly reportedUnserved = new WeakSet<Function>();

  constructor(
    @Inject(RATE_LIMIT_CONFIG) private readonly config: RateLimitConfig,
    @Inject(RATE_LIMIT_STORAGE) private readonly rawStorage: RateLimitStorage,
    private readonly planner: RoutePlanner,
  ) {
    this.storage = new ProtectedStorage(rawStorage, config.storageTimeoutMs, new CircuitBreaker(config.circuitBreaker));
  }

  /** The state of the circuit breaker in front of the storage, for health checks and metrics. */
  get circuitState(): CircuitState {
    return this.storage.breaker.state;
  }

  canActivate(context: ExecutionContext): MaybePromise<boolean> {
    const type = context.getType();
    if (type === 'rpc') {
      // message handlers also carry this guard as their own (TransportEnhancers): one check
      const args = context.getArgs();
      if (checkedMessages.has(args)) return true;
      checkedMessages.add(args);
    }
    const plan = this.planner.planFor(context);
    if (type !== 'http' && contextAdapterFor(type) === undefined) {
      return then(plan, (ready) => ready.exempt || this.unserved(context));
    }
    return isPromiseLike(plan) ? plan.then((ready) => this.start(ready, context)) : this.start(plan, context);
  }

  private start(plan: RoutePlan, context: ExecutionContext): MaybePromise<boolean> {
    if (plan.exempt) return true;
    const { skip } = this.config;
    if (skip === undefined) return this.identify(plan, context);
    let skipped: MaybePromise<boolean>;
    try {
      skipped = skip(context);
    } catch (error) {
      return this.userCodeFailed('skip function', context, error);
    }
    if (!isPromiseLike(skipped)) return skipped || this.identify(plan, context);
    return skipped.then(
      (yes) => yes || this.identify(plan, context),
      (error: unknown) => this.userCodeFailed('skip function', context, error),
    );
  }

  private identify(plan: RoutePlan, context: ExecutionContext): MaybePromise<boolean> {
    let identity: MaybePromise<string>;
    try {
      identity = plan.identify(context);
    } catch (error) {
      return this.userCodeFailed('key resolver', context, error);
    }
    if (!isPromiseLike(identity)) return this.selectRules(plan, context, identity);
    return identity.then(
      (ready) => this.selectRules(plan, context, ready),
      (error: unknown) => this.userCodeFailed('key resolver', context, error),
    );
  }

  private selectRules(plan: RoutePlan, context: ExecutionContext, identity: string): MaybePromise<boolean> {
    let rules: MaybePromise<RuleSet>;
    try {
      rules = plan.ruleSet(context);
    } catch (error) {
      return this.userCodeFailed('rate function', context, error);
    }
    if (!isPromiseLike(rules)) return this.weigh(plan, context, rules.checksFor(identity), rules);
    return rules.then(
      (ready) => this.weigh(plan, context, ready.checksFor(identity), ready),
      (error: unknown) => this.userCodeFailed('rate function', context, error),
    );
  }

  private weigh(plan: RoutePlan, context: ExecutionContext, checks: readonly RateLimitCheck[], rules: RuleSet): MaybePromise<boolean> {
    const { cost } = plan;
    if (typeof cost === 'number') return this.consult(plan, context, checks, rules, cost);
    let units: MaybePromise<number>;
    try {
      units = cost(context);
    } catch (error) {
      return this.userCodeFailed('cost function', context, error);
    }
    if (!isPromiseLike(units)) return this.consult(plan, context, checks, rules, units);
    return units.then(
      (ready) => this.consult(plan, context, checks, rules, ready),
      (error: unknown) => this.userCodeFailed('cost function', context, error),
    );
  }

  /** One storage call; if the storage cannot answer, the route's failure policy decides. */
  private consult(
    plan: RoutePlan,
    context: ExecutionContext,
    checks: readonly RateLimitCheck[],
    rules: RuleSet,
    cost: number,
  ): MaybePromise<boolean> {
    let answer: MaybePromise<RateLimitResult>;
    try {
      answer = this.storage.check(checks, cost);
    } catch (error) {
      return this.decide(this.applyFailurePolicy(plan.onStorageError, error, checks, cost, context), rules, cost, context);
    }
    if (!isPromiseLike(answer)) return this.admit(plan, context, checks, answer, rules, cost);
    return answer.then(
      (result) => this.admit(plan, context, checks, result, rules, cost),
      (error: unknown) => this.decide(this.applyFailurePolicy(plan.onStorageError, error, checks, cost, context), rules, cost, context),
    );
  }

  /** `decide`, then, for a route that counts only failures or successes, the refund of the others. */
  private admit(plan: RoutePlan, context: ExecutionContext, checks: readonly RateLimitCheck[], result: RateLimitResult, rules: RuleSet, cost: number): true {
    this.decide(result, rules, cost, context);
    if (plan.count !== 'all') {
      const keepFailures = plan.count === 'failures';
      whenFinished(context, (failed) => {
        if (failed !== keepFailures) this.refund(checks, cost);
      });
    }
    return true;
  }

  /** Gives back the units of the rules that count only failures or successes (not the module's default limit). */
  private refund(checks: readonly RateLimitCheck[], cost: number): void {
    const counted = checks.filter((check) => check.rule.count !== 'all');
    let done: MaybePromise<unknown>;
    try {
      done = this.storage.call(() => this.rawStorage.adjust!(counted, -cost));
    } catch (error) {
      return this.outageLog.warn(`Could not give back the units of a request: ${(error as Error)?.message ?? String(error)}`);
    }
    if (isPromiseLike(done)) {
      done.then(undefined, (error: unknown) => this.outageLog.warn(`Could not give back the units of a request: ${(error as Error)?.message ?? String(error)}`));
    }
  }

  private decide(result: RateLimitResult | typeof UNLIMITED, rules: RuleSet, cost: number, context: ExecutionContext): true {
    if (result === UNLIMITED) return true;
    if (result.allowed) {
      const type = context.getType();
      if (type === 'http') httpContext.admitted!(context, result, rules.policy, this.config.headers);
      else contextAdapterFor(type)?.admitted?.(context, result, rules.policy, this.config.headers);
      return true;
    }
    // the exception carries the headers; the filter (or yours) writes them with the 429
    const headers = rateLimitHeaders(this.config.headers, result, rules.policy);
    const worst = mostConstraining(result.decisions);
    const details = {
      rule: worst.rule,
      limit: worst.limit,
      remaining: worst.remaining,
      retryAfterMs: worst.retryAfterMs,
      resetMs: worst.resetMs,
      resetAt: result.now + worst.resetMs,
      cost,
    };
    const message =
      worst.retryAfterMs === Infinity
        ? `${this.config.errorMessage}: this request costs ${cost}, more than the ${worst.rule.capacity} that "${worst.rule.name}" can ever admit`
        : this.config.errorMessage;
    throw this.rejection(context, withoutStack(() => new RateLimitExceededException(details, message, headers)));
  }

  /** What to throw for a refusal: the exception, unless the context's adapter throws its own answer. */
  private rejection(context: ExecutionContext, refusal: RateLimitExceededException | RateLimitUnavailableException): unknown {
    const type = context.getType();
    return type === 'http' ? refusal : (contextAdapterFor(type)?.rejection?.(refusal, context) ?? refusal);
  }

  private applyFailurePolicy(
    policy: StorageErrorPolicy,
    error: unknown,
    checks: readonly RateLimitCheck[],
    cost: number,
    context: ExecutionContext,
  ): RateLimitResult | typeof UNLIMITED {
    if (!(error instanceof StorageUnavailableError)) throw error;
    this.outageLog.warn(`${error.message}; applying the '${policy}' failure policy`);
    if (policy === 'allow') return UNLIMITED;
    if (policy === 'deny') throw this.rejection(context, withoutStack(() => new RateLimitUnavailableException(this.storage.breaker.retryInMs || 1_000)));
    this.fallback ??= new MemoryStorage();
    return this.fallback.check(checks, cost);
  }

  /**
   * A limited handler runs in a context no adapter serves: refused, never let through unlimited,
   * with one logged error per handler saying what to do.
   */
  private unserved(context: ExecutionContext): never {
    const route = `${context.getClass().name}.${context.getHandler().name}`;
    const message =
      `Rate limit on ${route} cannot be enforced: no context adapter serves '${context.getType()}' contexts, so the call was refused. ` +
      'Register one with the `contextAdapters` option of RateLimitModule, or exempt the handler with @SkipRateLimit().';
    if (!this.reportedUnserved.has(context.getHandler())) {
      this.reportedUnserved.add(context.getHandler());
      this.logger.error(message);
    }
    // Intrinsic: Nest's exception handlers would otherwise log it again on every call (with a stack)
    throw new IntrinsicException(message);
  }

  /**
   * User code (key resolvers, rate and cost functions) failed: the request fails with a 500 and
   * a logged error. An unidentifiable request must never pass unlimited.
   */
  private userCodeFailed(what: string, context: ExecutionContext, error: unknown): never {
    const route = `${context.getClass().name}.${context.getHandler().name}`;
    this.logger.error(`Rate limit ${what} failed on ${route}; the request was refused.`, (error as Error)?.stack ?? String(error));
    throw new InternalServerErrorException();
  }
}
