import { Inject, Injectable, type ExecutionContext, type Type } from '@nestjs/common';
import { ModuleRef, Reflector } from '@nestjs/core';
import {
  assertUnits,
  RATE_LIMIT_METADATA,
  type RateLimitMetadata,
  type RateLimitOptions,
  type RateLimitRate,
} from '../decorators/rate-limit.decorator.js';
import { SKIP_RATE_LIMIT_METADATA } from '../decorators/skip-rate-limit.decorator.js';
import { IpKeyResolver } from '../keys/ip.key-resolver.js';
import type { RateLimitKey, RateLimitKeyFunction, RateLimitKeyResolver } from '../keys/rate-limit-key-resolver.interface.js';
import { RATE_LIMIT_CONFIG, type RateLimitConfig } from '../rate-limit.config.js';
import { isPromiseLike, then, type MaybePromise } from '../utils/maybe-async.js';
import { bindRules } from './bind-rules.js';
import { parseRate, type ParsedRate } from './parse-rate.js';
import type { RateLimitRule } from './rate-limit-rule.js';
import type { RoutePlan } from './route-plan.js';
import { RuleSet } from './rule-set.js';

const EXEMPT: RoutePlan = {
  exempt: true,
  ruleSet: () => new RuleSet([], ''),
  cost: 0,
  onStorageError: 'allow',
  identify: () => '',
};

/** Distinct rate strings a rate function may return per route before the cache starts over. */
const RATE_CACHE_SIZE = 64;

/**
 * Turns a route's decorators and the module options into a {@link RoutePlan}, once per route:
 * rules bound to algorithms and storage keys, the policy header, and the key resolver.
 */
@Injectable()
export class RoutePlanner {
  private readonly plans = new WeakMap<object, Map<object, MaybePromise<RoutePlan>>>();
  private readonly ipResolver = new IpKeyResolver();

  constructor(
    @Inject(RATE_LIMIT_CONFIG) private readonly config: RateLimitConfig,
    private readonly reflector: Reflector,
    private readonly moduleRef: ModuleRef,
  ) {}

  planFor(context: ExecutionContext): MaybePromise<RoutePlan> {
    const controller = context.getClass();
    const handler = context.getHandler();
    let byHandler = this.plans.get(controller);
    if (byHandler === undefined) this.plans.set(controller, (byHandler = new Map()));
    let plan = byHandler.get(handler);
    if (plan === undefined) {
      plan = this.build(controller, handler);
      byHandler.set(handler, plan);
      if (isPromiseLike(plan)) {
        const routes = byHandler;
        plan.then((ready) => routes.set(handler, ready), () => routes.delete(handler));
      }
    }
    return plan;
  }

  private build(controller: Type, handler: Function): MaybePromise<RoutePlan> {
    const targets = [handler, controller];
    const skipped = this.reflector.getAllAndOverride<boolean | undefined>(SKIP_RATE_LIMIT_METADATA, targets) === true;
    const metadata = this.reflector.getAllAndOverride<RateLimitMetadata | undefined>(RATE_LIMIT_METADATA, targets);
    const { defaultLimit } = this.config;
    if (skipped || (metadata === undefined && defaultLimit === undefined)) return EXEMPT;

    const defaultRules = defaultLimit
      ? bindRules(defaultLimit, { name: 'default', bucket: '*', algorithm: this.config.algorithm })
      : [];
    const ruleSet = metadata
      ? this.routeRuleSet(metadata, `${controller.name}.${handler.name}`, defaultRules)
      : constant(new RuleSet(defaultRules, this.config.keyPrefix));
    return then(this.keyFunction(metadata?.options.key ?? this.config.key), (resolve) => ({
      exempt: false,
      ruleSet,
      cost: costOf(metadata?.options.cost),
      onStorageError: metadata?.options.onStorageError ?? this.config.onStorageError,
      identify: (context: ExecutionContext) => {
        const identity = resolve(context);
        return isPromiseLike(identity) ? identity.then((id) => this.orIp(id, context)) : this.orIp(identity, context);
      },
    }));
  }

  /** An empty answer falls back to the client IP, as `ip:<address>`. */
  private orIp(identity: string | undefined, context: ExecutionContext): string {
    return identity ? String(identity) : this.ipResolver.resolve(context);
  }

  private routeRuleSet(
    metadata: RateLimitMetadata,
    routeName: string,
    defaultRules: readonly RateLimitRule[],
  ): RoutePlan['ruleSet'] {
    const { bucket = routeName, algorithm = this.config.algorithm, burst } = metadata.options;
    const compile = (rates: readonly ParsedRate[]) =>
      new RuleSet([...bindRules(rates, { name: bucket, bucket, algorithm, burst }), ...defaultRules], this.config.keyPrefix);
    const { rate } = metadata;
    if (typeof rate !== 'function') return constant(compile(rate));

    // Rate functions return a handful of distinct strings (one per plan tier): parse each once.
    const cache = new Map<string, RuleSet>();
    return (context) =>
      then(rate(context), (value: RateLimitRate) => {
        const cacheKey = typeof value === 'string' ? value : value.join(';');
        let ruleSet = cache.get(cacheKey);
        if (ruleSet === undefined) {
          if (cache.size >= RATE_CACHE_SIZE) cache.clear();
          ruleSet = compile(parseRate(value));
          cache.set(cacheKey, ruleSet);
        }
        return ruleSet;
      });
  }

  /** A key option as a plain function; resolver classes come from DI (or are created once). */
  private keyFunction(key: RateLimitKey | undefined): MaybePromise<RateLimitKeyFunction> {
    if (key === undefined) return () => undefined;
    if (isResolverClass(key)) {
      let resolver: RateLimitKeyResolver | Promise<RateLimitKeyResolver>;
      try {
        resolver = this.moduleRef.get(key, { strict: false });
      } catch {
        resolver = this.moduleRef.create(key);
      }
      return then(resolver, (instance) => (context) => instance.resolve(context));
    }
    if (typeof key === 'function') return key as RateLimitKeyFunction;
    return (context) => key.resolve(context);
  }
}

function isResolverClass(key: RateLimitKey): key is Type<RateLimitKeyResolver> {
  return typeof key === 'function' && typeof (key.prototype as Partial<RateLimitKeyResolver> | undefined)?.resolve === 'function';
}


function constant<T>(value: T): () => T {
  return () => value;
}

function costOf(cost: RateLimitOptions['cost']): RoutePlan['cost'] {
  if (typeof cost !== 'function') return cost ?? 1;
  return (context) =>
    then(cost(context), (units) => {
      assertUnits('cost', units);
      return units;
    });
}
