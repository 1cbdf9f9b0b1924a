import {
  Inject,
  Injectable,
  Optional,
  InternalServerErrorException,
  IntrinsicException,
  Logger,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { RateLimitExceededException } from '../exceptions/rate-limit-exceeded.exception.js';
import { RateLimitUnavailableException } from '../exceptions/rate-limit-unavailable.exception.js';
import { withoutStack } from '../exceptions/without-stack.js';
import { DeniedEvents } from '../contexts/denied-events.js';
import { contextAdapterFor } from '../contexts/context-adapters.js';
import { httpContext } from '../contexts/http.context-adapter.js';
import { mostConstraining } from '../headers/rate-limit-headers.js';
import { denial } from '../exceptions/denial.js';
import { RATE_LIMIT_CONFIG, type RateLimitConfig } from '../rate-limit.config.js';
import { CircuitBreaker, type CircuitState } from '../resilience/circuit-breaker.js';
import { ProtectedStorage } from '../resilience/protected-storage.js';
import { StorageUnavailableError } from '../resilience/storage-unavailable.error.js';
import { ThrottledLogger } from '../resilience/throttled-logger.js';
import type { RoutePlan } from '../rules/route-plan.js';
import { RoutePlanner } from '../rules/route-planner.js';
import type { RuleSet } from '../rules/rule-set.js';
import { MemoryStorage } from '../storage/memory.storage.js';
import type { RateLimitDecision, RateLimitResult } from '../storage/rate-limit-decision.js';
import {
  RATE_LIMIT_STORAGE,
  type RateLimitCheck,
  type RateLimitStorage,
} from '../storage/rate-limit-storage.interface.js';
import { isPromiseLike, then, type MaybePromise } from '../utils/maybe-async.js';
import { whenFinished } from '../outcomes/request-outcome.js';
import { RATE_LIMIT_METRICS, RateLimitMetrics, type RateLimitOutcome } from '../observability/rate-limit-metrics.js';
import type { RateLimitDecisionEvent } from '../observability/rate-limit-decision-event.js';
import { routeName } from '../rules/route-name.js';
import { LimitAdvisor } from '../advisor/limit-advisor.js';

/**
 * The arguments of RPC messages checked so far. A message meets the guard twice when it runs both
 * as a global guard and as its handler's own (TransportEnhancers); shared by every instance,
 * since the handler's may come from another app built in the same process.
 */
const checkedMessages = new WeakSet<object>();

function routeOf(context: ExecutionContext): string {
  return routeName(context.getClass(), context.getHandler());
}

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
  private readonly shadowLog = new ThrottledLogger(`${RateLimitGuard.name} (shadow)`);
  private readonly hookLog = new ThrottledLogger(`${RateLimitGuard.name} (onDecision)`);
  /** Whether metrics or the `onDecision` hook listen: otherwise decisions are not reported at all. */
  private readonly observing: boolean;

  constructor(
    @Inject(RATE_LIMIT_CONFIG) private readonly config: RateLimitConfig,
    @Inject(RATE_LIMIT_STORAGE) private readonly rawStorage: RateLimitStorage,
    private readonly planner: RoutePlanner,
    @Optional() @Inject(RATE_LIMIT_METRICS) private readonly metrics: RateLimitMetrics = RateLimitMetrics.disabled(),
    @Optional() private readonly deniedEvents?: DeniedEvents,
    @Optional() private readonly advisor?: LimitAdvisor,
  ) {
    this.storage = new ProtectedStorage(rawStorage, config.storageTimeoutMs, new CircuitBreaker(config.circuitBreaker));
    this.observing = metrics.enabled || config.onDecision !== undefined;
    metrics.observeCircuit(() => this.storage.breaker.state);
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
    const { quick } = plan;
    if (quick !== undefined) {
      let checks: readonly RateLimitCheck[];
      try {
        checks = quick.checks(context);
      } catch (error) {
        return this.userCodeFailed('key resolver', context, error);
      }
      return this.weigh(plan, context, checks, quick.rules);
    }
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
    const startedAt = this.metrics.enabled ? performance.now() : 0;
    let answer: MaybePromise<RateLimitResult>;
    try {
      answer = this.storage.check(checks, cost);
    } catch (error) {
      return this.storageFailed(plan, context, checks, rules, cost, error);
    }
    if (!isPromiseLike(answer)) {
      // a storage that may answer from a cache (RedisStorage's denials) made no call when it answers at once
      if (startedAt > 0 && this.rawStorage.cachedDenial === undefined) this.metrics.storageCall((performance.now() - startedAt) / 1000);
      return this.admit(plan, context, checks, answer, rules, cost, 'storage');
    }
    return answer.then(
      (result) => {
        if (startedAt > 0) this.metrics.storageCall((performance.now() - startedAt) / 1000);
        return this.admit(plan, context, checks, result, rules, cost, 'storage');
      },
      (error: unknown) => this.storageFailed(plan, context, checks, rules, cost, error),
    );
  }

  /**
   * `decide`, then, for a route that counts only failures or successes, the refund of the others
   * when the handler has ended, to the storage that charged: the `memory` failure policy's
   * stand-in for a request it decided.
   */
  private admit(
    plan: RoutePlan,
    context: ExecutionContext,
    checks: readonly RateLimitCheck[],
    result: RateLimitResult,
    rules: RuleSet,
    cost: number,
    via: 'storage' | 'fallback',
  ): true {
    this.decide(plan, context, checks, result, rules, cost, via);
    // a request let through in shadow mode after a denial was not charged: nothing to give back
    if (plan.count !== 'all' && result.allowed) {
      const keepFailures = plan.count === 'failures';
      whenFinished(context, (failed) => {
        if (failed !== keepFailures) this.refund(checks, cost, result, via);
      });
    }
    return true;
  }

  /**
   * Gives back the units of the rules that count only failures or successes (not the module's
   * default limit), where and when they were taken: a refund never makes room in a later window.
   */
  private refund(checks: readonly RateLimitCheck[], cost: number, charge: RateLimitResult, via: 'storage' | 'fallback'): void {
    const counted = checks.filter((check) => check.rule.count !== 'all');
    const chargedAt = charge.chargedAt ?? charge.now;
    if (via === 'fallback') return this.fallback!.refund(counted, cost, chargedAt);
    const failed = (error: unknown) => this.outageLog.warn(`Could not give back the units of a request: ${(error as Error)?.message ?? String(error)}`);
    let done: MaybePromise<unknown>;
    try {
      done = this.storage.call((deadline) => this.rawStorage.refund!(counted, cost, chargedAt, deadline), 'A refund');
    } catch (error) {
      return failed(error);
    }
    if (isPromiseLike(done)) done.then(undefined, failed);
  }

  /** The storage could not answer: a denial it is known to hold stands; otherwise the route's failure policy decides. */
  private storageFailed(plan: RoutePlan, context: ExecutionContext, checks: readonly RateLimitCheck[], rules: RuleSet, cost: number, error: unknown): true {
    if (!(error instanceof StorageUnavailableError)) throw error;
    // an open circuit made no call: nothing failed this time
    if (this.metrics.enabled && error.reason !== 'circuit-open') this.metrics.storageError();
    const known = this.rawStorage.cachedDenial?.(checks, cost, true);
    if (known !== undefined) return this.decide(plan, context, checks, known, rules, cost, 'storage');
    const policy = plan.onStorageError;
    this.outageLog.warn(`${error.message}; applying the '${policy}' failure policy`);
    if (policy === 'allow') {
      if (this.observing) this.report(context, checks, cost, 'fail_open', rules, undefined);
      return true;
    }
    if (policy === 'deny') {
      if (this.observing) this.report(context, checks, cost, 'fail_closed', rules, undefined);
      if (plan.mode === 'shadow') return true; // shadow mode refuses nothing, this refusal included
      const refusal = withoutStack(() => new RateLimitUnavailableException(this.storage.breaker.retryInMs || 1_000, undefined, this.config.problemDetails));
      throw this.rejection(context, refusal);
    }
    this.fallback ??= new MemoryStorage();
    return this.admit(plan, context, checks, this.fallback.check(checks, cost), rules, cost, 'fallback');
  }

  /**
   * Sends the headers of an admitted request, or throws the refusal of a denied one; in shadow
   * mode a denial is reported and let through. `via`: whether the storage or the `memory`
   * failure policy's stand-in decided.
   */
  private decide(
    plan: RoutePlan,
    context: ExecutionContext,
    checks: readonly RateLimitCheck[],
    result: RateLimitResult,
    rules: RuleSet,
    cost: number,
    via: 'storage' | 'fallback',
  ): true {
    const shadow = plan.mode === 'shadow';
    if (rules.observed) this.advisor?.observe(checks, result, cost, shadow);
    if (result.allowed || shadow) {
      if (this.observing) {
        const outcome = !result.allowed ? 'shadow_denied' : via === 'fallback' ? 'fallback' : 'allowed';
        this.report(context, checks, cost, outcome, rules, mostConstraining(result.decisions));
      }
      if (!result.allowed) this.reportShadowDenial(context, result);
      if (shadow && !this.config.shadowHeaders) return true;
      const type = context.getType();
      if (type === 'http') httpContext.admitted!(context, result, rules.policy, this.config.headers);
      else contextAdapterFor(type)?.admitted?.(context, result, rules.policy, this.config.headers);
      return true;
    }
    // a 429 is a 429, whichever storage decided it
    if (this.observing) this.report(context, checks, cost, 'denied', rules, mostConstraining(result.decisions));
    // the exception carries the headers; the filter (or yours) writes them with the 429
    throw this.rejection(context, denial(this.config, result, rules.policy, cost));
  }

  /** The throttled warning of shadow mode; its text is built only when it is written. */
  private reportShadowDenial(context: ExecutionContext, result: RateLimitResult): void {
    this.shadowLog.warn(() => `Shadow mode: a request to ${routeOf(context)} would have been refused (${mostConstraining(result.decisions).rule.name})`);
  }

  /** One decision to the metrics and the `onDecision` hook; only called when either listens. */
  private report(
    context: ExecutionContext,
    checks: readonly RateLimitCheck[],
    cost: number,
    outcome: RateLimitOutcome,
    rules: RuleSet,
    decision: RateLimitDecision | undefined,
  ): void {
    const policy = decision?.rule.name ?? rules.rules[0]?.name ?? '';
    if (this.metrics.enabled) this.metrics.request(outcome, policy, decision?.remaining, decision?.limit);
    const hook = this.config.onDecision;
    if (hook === undefined) return;
    const key = checks[0]?.key ?? '';
    const event: RateLimitDecisionEvent = {
      route: routeOf(context),
      type: context.getType(),
      policy,
      outcome,
      // as in storage keys, between the hash-tag braces: long or unusual identities are hashed
      identity: key.slice(key.indexOf('{') + 1, key.indexOf('}')),
      decision,
      cost,
    };
    try {
      hook(event);
    } catch (error) {
      this.hookLog.warn(`The onDecision hook threw on ${event.route}; the request went on: ${(error as Error)?.stack ?? String(error)}`);
    }
  }

  /** What to throw for a refusal: the exception, unless the context's adapter throws its own answer. */
  private rejection(context: ExecutionContext, refusal: RateLimitExceededException | RateLimitUnavailableException): unknown {
    const type = context.getType();
    if (type === 'http') return refusal;
    if (type === 'rpc') this.deniedEvents?.refused(context, refusal);
    return contextAdapterFor(type)?.rejection?.(refusal, context) ?? refusal;
  }

  /**
   * A limited handler runs in a context no adapter serves: refused, never let through unlimited,
   * with one logged error per handler saying what to do.
   */
  private unserved(context: ExecutionContext): never {
    const route = routeOf(context);
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
    const route = routeOf(context);
    this.logger.error(`Rate limit ${what} failed on ${route}; the request was refused.`, (error as Error)?.stack ?? String(error));
    throw new InternalServerErrorException();
  }
}
