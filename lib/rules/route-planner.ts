import { Inject, Injectable, Optional, type ExecutionContext, type OnModuleInit, type Type } from '@nestjs/common';
import type { AlgorithmName } from '../algorithms/algorithm.interface.js';
import { RATE_LIMIT_STORAGE, type RateLimitStorage } from '../storage/rate-limit-storage.interface.js';
import { DiscoveryService, MetadataScanner, ModuleRef, Reflector } from '@nestjs/core';
import {
  assertUnits,
  RATE_LIMIT_METADATA,
  type RateLimitMetadata,
  type RateLimitOptions,
  type RateLimitRate,
} from '../decorators/rate-limit.decorator.js';
import { SKIP_RATE_LIMIT_METADATA } from '../decorators/skip-rate-limit.decorator.js';
import {
  CONCURRENCY_LIMIT_METADATA,
  type ConcurrencyLimitMetadata,
} from '../decorators/concurrency-limit.decorator.js';
import type { ConcurrencyPlan } from '../concurrency/concurrency-plan.js';
import { concurrencyRule, CONCURRENCY_RETRY_AFTER_MS } from '../concurrency/concurrency-rule.js';
import { concurrencyDeniedHeaders, policyName } from '../headers/rate-limit-headers.js';
import { storageKeyBase } from '../keys/storage-key.js';
import { IpKeyResolver } from '../keys/ip.key-resolver.js';
import { PrefixedKeyResolver } from '../keys/prefixed-key-resolver.js';
import type { RateLimitKey, RateLimitKeyFunction, RateLimitKeyResolver } from '../keys/rate-limit-key-resolver.interface.js';
import { RATE_LIMIT_CONFIG, type RateLimitConfig } from '../rate-limit.config.js';
import { isPromiseLike, then, type MaybePromise } from '../utils/maybe-async.js';
import { bindRules } from './bind-rules.js';
import { ChecksCache } from './checks-cache.js';
import { parseRate, type ParsedRate } from './parse-rate.js';
import type { RateLimitRule } from './rate-limit-rule.js';
import { RouteKeys, scanRouteBuckets } from './route-id.js';
import type { RoutePlan } from './route-plan.js';
import { RouteTable } from './route-table.js';
import { RuleSet } from './rule-set.js';
import { routeName } from './route-name.js';

const EXEMPT: RoutePlan = {
  exempt: true,
  ruleSet: () => new RuleSet([], ''),
  cost: 0,
  count: 'all',
  mode: 'enforce',
  onStorageError: 'allow',
  identify: () => '',
};

/** Distinct rate strings a rate function may return per route before the cache starts over. */
const RATE_CACHE_SIZE = 64;
/** Longest rate string a rate function's cache keeps; longer ones are parsed per request. */
const MAX_CACHED_RATE_TEXT = 256;

/**
 * Turns a route's decorators and the module options into a {@link RoutePlan}, once per route:
 * rules bound to algorithms and storage keys, the policy header, and the key resolver. Every
 * route Nest knows of is planned when the application starts, so a resolver that cannot be
 * built stops start-up instead of failing requests.
 */
@Injectable()
export class RoutePlanner implements OnModuleInit {
  private readonly plans = new RouteTable<RoutePlan>();
  private readonly ipResolver = new IpKeyResolver();
  /** Every rule set's client checks, under one app-wide bound. */
  private readonly checksCache = new ChecksCache();
  /** What decorated routes declared for each bucket. */
  private readonly buckets = new Map<string, BucketDefinition | 'ambiguous'>();
  /** Resolver classes, built once each and shared by every route that names them. */
  private readonly resolvers = new Map<Type<RateLimitKeyResolver>, MaybePromise<RateLimitKeyResolver>>();
  /** The short id each route's keys carry in place of its name. */
  private readonly routeKeys = new RouteKeys();

  constructor(
    @Inject(RATE_LIMIT_CONFIG) private readonly config: RateLimitConfig,
    private readonly reflector: Reflector,
    private readonly moduleRef: ModuleRef,
    private readonly discovery?: DiscoveryService,
    private readonly scanner?: MetadataScanner,
    @Optional() @Inject(RATE_LIMIT_STORAGE) private readonly storage?: RateLimitStorage,
  ) {}

  /** Plans every controller route, and every provider method under `@RateLimit` (gateways, resolvers). */
  async onModuleInit(): Promise<void> {
    const { key } = this.config;
    if (key !== undefined) await this.keyFunction(key, 'the module option `key`');
    if (this.discovery === undefined || this.scanner === undefined) return;
    const { uses, buckets } = scanRouteBuckets(this.discovery, this.scanner, this.reflector, this.config.algorithm);
    this.routeKeys.assign(uses, buckets, this.config.keyPrefix);
    const planning: MaybePromise<RoutePlan>[] = [];
    const visit = (type: Type, everyMethod: boolean) => {
      const classLimited = this.reflector.get(RATE_LIMIT_METADATA, type) !== undefined;
      for (const name of this.scanner!.getAllMethodNames(type.prototype)) {
        const handler = (type.prototype as Record<string, unknown>)[name];
        if (typeof handler !== 'function') continue;
        if (everyMethod || classLimited || this.reflector.get(RATE_LIMIT_METADATA, handler) !== undefined) {
          planning.push(this.plan(type, handler));
        }
      }
    };
    for (const wrapper of this.discovery.getControllers()) {
      if (typeof wrapper.metatype === 'function') visit(wrapper.metatype as Type, true);
    }
    for (const wrapper of this.discovery.getProviders()) {
      if (typeof wrapper.metatype === 'function' && !wrapper.inject && wrapper.metatype.prototype) visit(wrapper.metatype as Type, false);
    }
    await Promise.all(planning);
    await this.planConcurrencyLimits(this.discovery, this.scanner);
  }

  /**
   * Whether a limit of the route counts against the client address for want of a `key` (the
   * route's or the module's): on a transport that carries none, every call of it would fail.
   */
  fallsBackToAddress(controller: Type, handler: Function): boolean {
    const targets = [handler, controller];
    if (this.reflector.getAllAndOverride<boolean | undefined>(SKIP_RATE_LIMIT_METADATA, targets) === true) return false;
    const rateLimit = this.reflector.getAllAndOverride<RateLimitMetadata | undefined>(RATE_LIMIT_METADATA, targets);
    const limited = rateLimit !== undefined || this.config.defaultLimit !== undefined;
    if (limited && (rateLimit?.options.key ?? this.config.key) === undefined) return true;
    const concurrency = this.reflector.getAllAndOverride<ConcurrencyLimitMetadata | undefined>(CONCURRENCY_LIMIT_METADATA, targets);
    return concurrency !== undefined && (concurrency.options.key ?? this.config.key) === undefined;
  }

  planFor(context: ExecutionContext): MaybePromise<RoutePlan> {
    return this.plan(context.getClass(), context.getHandler());
  }

  private plan(controller: Type, handler: Function): MaybePromise<RoutePlan> {
    return this.plans.get(controller, handler, this.build);
  }

  // an arrow: RouteTable calls it unbound, and a bound method allocates nothing per request
  private readonly build = (controller: Type, handler: Function): MaybePromise<RoutePlan> => {
    const targets = [handler, controller];
    const skipped = this.reflector.getAllAndOverride<boolean | undefined>(SKIP_RATE_LIMIT_METADATA, targets) === true;
    const metadata = this.reflector.getAllAndOverride<RateLimitMetadata | undefined>(RATE_LIMIT_METADATA, targets);
    const { defaultLimit } = this.config;
    if (skipped || (metadata === undefined && defaultLimit === undefined)) return EXEMPT;

    const route = routeName(controller, handler);
    if (metadata) this.declare(metadata, route);
    if (metadata && (metadata.options.count ?? 'all') !== 'all' && this.storage?.refund === undefined) {
      throw new Error(
        `RateLimitModule: @RateLimit on ${route} counts only ${metadata.options.count}, which needs a storage with refund(); ` +
          `${this.storage?.constructor.name} has none. Use MemoryStorage or RedisStorage, or implement it (see RateLimitStorage).`,
      );
    }
    const defaultRules = defaultLimit
      ? bindRules(defaultLimit, { name: 'default', bucket: '*', algorithm: this.config.algorithm, observed: this.config.advisor !== undefined })
      : [];
    const rules = metadata
      ? this.routeRuleSet(metadata, route, defaultRules)
      : new RuleSet(defaultRules, this.config.keyPrefix, this.checksCache);
    const key = metadata?.options.key ?? this.config.key;
    return then(this.keyResolver(key, `route ${route}`), (resolver) => {
      const resolve = asFunction(resolver);
      return {
        exempt: false,
        ruleSet: rules instanceof RuleSet ? constant(rules) : rules,
        cost: costOf(metadata?.options.cost),
        count: metadata?.options.count ?? 'all',
        mode: metadata?.options.mode ?? this.config.mode,
        onStorageError: metadata?.options.onStorageError ?? this.config.onStorageError,
        identify: (context: ExecutionContext) => {
          const identity = resolve(context);
          return isPromiseLike(identity) ? identity.then((id) => this.orIp(id, context)) : this.orIp(identity, context);
        },
        quick: rules instanceof RuleSet ? this.quickLookup(resolver, rules) : undefined,
      };
    });
  };

  /**
   * For fixed rules and a built-in resolver (or none: the client IP), the checks found by the
   * resolver's value, with the same fallback to the client IP as `orIp`.
   */
  private quickLookup(resolver: RateLimitKeyResolver | RateLimitKeyFunction | undefined, rules: RuleSet): RoutePlan['quick'] {
    const ip = this.ipResolver;
    const byIp = rules.byValue(ip.prefix);
    if (resolver === undefined) return { rules, checks: (context) => byIp(ip.value(context)) };
    if (typeof resolver === 'function' || !PrefixedKeyResolver.byValue(resolver)) return undefined;
    const byResolver = rules.byValue(resolver.prefix);
    return {
      rules,
      checks: (context) => {
        const value = resolver.value(context);
        return value ? byResolver(value) : byIp(ip.value(context));
      },
    };
  }

  /** What stands for `bucket` in storage keys: the route's id for `Controller.method`, else the bucket itself. */
  bucketKey(bucket: string): string {
    return this.routeKeys.keyOf(bucket);
  }

  /** The limit of the decorated routes using `bucket`, or 'ambiguous' if they differ (for RateLimitService). */
  bucket(name: string): BucketDefinition | 'ambiguous' | undefined {
    return this.buckets.get(name);
  }

  private declare(metadata: RateLimitMetadata, routeName: string): void {
    const { bucket = routeName, algorithm = this.config.algorithm, burst } = metadata.options;
    const definition: BucketDefinition = { rate: metadata.rate, algorithm, burst, blockMs: metadata.blockMs };
    const known = this.buckets.get(bucket);
    if (known === undefined) this.buckets.set(bucket, definition);
    else if (known !== 'ambiguous' && !sameDefinition(known, definition)) this.buckets.set(bucket, 'ambiguous');
  }

  /** An empty answer falls back to the client IP, as `ip:<address>`; a wrong type is an error. */
  private orIp(identity: unknown, context: ExecutionContext): string {
    if (typeof identity === 'string') return identity === '' ? `ip:${this.ipResolver.value(context)}` : identity;
    if (identity === undefined || identity === null) return `ip:${this.ipResolver.value(context)}`;
    if (typeof identity === 'number' && Number.isFinite(identity)) return String(identity);
    // Anything else would become one string shared by every client, such as "[object Object]".
    throw new TypeError(
      `a key resolver must return a string, a finite number, or undefined/null/'' for the client IP; it returned ${describeValue(identity)}`,
    );
  }

  private routeRuleSet(
    metadata: RateLimitMetadata,
    routeName: string,
    defaultRules: readonly RateLimitRule[],
  ): RuleSet | RoutePlan['ruleSet'] {
    const { bucket = routeName, algorithm = this.config.algorithm, burst, count } = metadata.options;
    const { blockMs } = metadata;
    const observed = this.config.advisor !== undefined && metadata.options.advise !== false;
    const key = this.routeKeys.bucketKey(metadata.options.bucket, routeName);
    const compile = (rates: readonly ParsedRate[], cache?: ChecksCache) =>
      new RuleSet([...bindRules(rates, { name: bucket, bucket: key, algorithm, burst, blockMs, count, observed }), ...defaultRules], this.config.keyPrefix, cache);
    const { rate } = metadata;
    if (typeof rate !== 'function') return compile(rate, this.checksCache);

    // Rate functions return a handful of distinct strings (one per plan tier): parse each once.
    const cache = new Map<string, RuleSet>();
    return (context) =>
      then(rate(context), (value: RateLimitRate) => {
        const text = typeof value === 'string' ? value : value.join(';');
        let ruleSet = cache.get(text);
        if (ruleSet !== undefined) return ruleSet;
        // Nothing unusual is kept: an odd rate costs a parse per request, never memory.
        if (text.length > MAX_CACHED_RATE_TEXT) return compile(parseRate(value));
        ruleSet = compile(parseRate(value), this.checksCache);
        if (cache.size >= RATE_CACHE_SIZE) cache.clear();
        cache.set(text, ruleSet);
        return ruleSet;
      });
  }

  /** A key option as a plain function; resolver classes come from DI (or are created once). */
  private keyFunction(key: RateLimitKey | undefined, where: string): MaybePromise<RateLimitKeyFunction> {
    return then(this.keyResolver(key, where), asFunction);
  }

  /** A key option as a resolver instance or a function; resolver classes come from DI (or are created once). */
  private keyResolver(key: RateLimitKey | undefined, where: string): MaybePromise<RateLimitKeyResolver | RateLimitKeyFunction | undefined> {
    return isResolverClass(key) ? this.resolver(key, where) : key;
  }

  /**
   * A resolver class listed as a provider anywhere in the app comes from there, with its
   * dependencies; one listed nowhere is created here, and then sees only global providers.
   */
  private resolver(type: Type<RateLimitKeyResolver>, where: string): MaybePromise<RateLimitKeyResolver> {
    let resolver = this.resolvers.get(type);
    if (resolver !== undefined) return resolver;
    const fail = (error: unknown): never => {
      this.resolvers.delete(type);
      throw new Error(
        `RateLimitModule: cannot build the key resolver ${type.name} for ${where}: ${(error as Error)?.message ?? String(error)} ` +
          `If it injects providers, list ${type.name} in the \`providers\` of a module that can see them.`,
        { cause: error },
      );
    };
    try {
      resolver = this.moduleRef.get(type, { strict: false });
    } catch {
      try {
        resolver = this.moduleRef.create(type).catch(fail);
      } catch (error) {
        fail(error);
      }
    }
    this.resolvers.set(type, resolver!);
    return resolver!;
  }

  /** Concurrency plans by controller and handler; undefined for a route without `@ConcurrencyLimit`. */
  private readonly concurrencyPlans = new RouteTable<ConcurrencyPlan | undefined>();

  /** The `@ConcurrencyLimit` of the context's route, handler over controller; undefined if none applies. */
  concurrencyFor(context: ExecutionContext): MaybePromise<ConcurrencyPlan | undefined> {
    return this.concurrencyPlan(context.getClass(), context.getHandler());
  }

  private concurrencyPlan(controller: Type, handler: Function): MaybePromise<ConcurrencyPlan | undefined> {
    return this.concurrencyPlans.get(controller, handler, this.buildConcurrency);
  }

  /** Key resolution as for `@RateLimit`: the route's `key`, the module's, then the client IP. */
  private readonly buildConcurrency = (controller: Type, handler: Function): MaybePromise<ConcurrencyPlan | undefined> => {
    const targets = [handler, controller];
    if (this.reflector.getAllAndOverride<boolean | undefined>(SKIP_RATE_LIMIT_METADATA, targets) === true) return undefined;
    const metadata = this.reflector.getAllAndOverride<ConcurrencyLimitMetadata | undefined>(CONCURRENCY_LIMIT_METADATA, targets);
    if (metadata === undefined) return undefined;
    const route = routeName(controller, handler);
    const { limit, leaseMs, options } = metadata;
    const bucket = options.bucket ?? route;
    const name = policyName(bucket);
    const rule = concurrencyRule(name, this.routeKeys.bucketKey(options.bucket, route), limit);
    const rateLimit = this.reflector.getAllAndOverride<RateLimitMetadata | undefined>(RATE_LIMIT_METADATA, targets);
    const { keyPrefix, headers } = this.config;
    return then(this.keyFunction(options.key ?? this.config.key, `route ${route}`), (resolve) => ({
      route,
      limit,
      leaseMs,
      rule,
      deniedHeaders: concurrencyDeniedHeaders(headers, name, limit, CONCURRENCY_RETRY_AFTER_MS),
      onStorageError: options.onStorageError ?? rateLimit?.options.onStorageError ?? this.config.onStorageError,
      identify: (context: ExecutionContext) => {
        const identity = resolve(context);
        return isPromiseLike(identity) ? identity.then((id) => this.orIp(id, context)) : this.orIp(identity, context);
      },
      keyFor: (identity: string) => storageKeyBase(keyPrefix, identity) + rule.keySuffix,
    }));
  };

  /** Plans every route under `@ConcurrencyLimit` at start-up, so a resolver that cannot be built stops it. */
  private async planConcurrencyLimits(discovery: DiscoveryService, scanner: MetadataScanner): Promise<void> {
    const planning: MaybePromise<ConcurrencyPlan | undefined>[] = [];
    for (const { metatype, inject } of [...discovery.getControllers(), ...discovery.getProviders()]) {
      if (typeof metatype !== 'function' || inject || !metatype.prototype) continue;
      const classLimited = Reflect.hasMetadata(CONCURRENCY_LIMIT_METADATA, metatype);
      for (const name of scanner.getAllMethodNames(metatype.prototype)) {
        const handler = (metatype.prototype as Record<string, unknown>)[name];
        if (typeof handler !== 'function') continue;
        if (classLimited || Reflect.hasMetadata(CONCURRENCY_LIMIT_METADATA, handler)) planning.push(this.concurrencyPlan(metatype as Type, handler));
      }
    }
    await Promise.all(planning);
  }
}

/** A bucket's limit as its routes declare it. */
export interface BucketDefinition {
  readonly rate: RateLimitMetadata['rate'];
  readonly algorithm: AlgorithmName;
  readonly burst?: number;
  readonly blockMs: number;
}

function sameDefinition(a: BucketDefinition, b: BucketDefinition): boolean {
  const rateText = (rate: BucketDefinition['rate']) => (typeof rate === 'function' ? rate : rate.map((r) => r.text).join(';'));
  return rateText(a.rate) === rateText(b.rate) && a.algorithm === b.algorithm && a.burst === b.burst && a.blockMs === b.blockMs;
}

function asFunction(resolver: RateLimitKeyResolver | RateLimitKeyFunction | undefined): RateLimitKeyFunction {
  if (resolver === undefined) return () => undefined;
  if (typeof resolver === 'function') return resolver;
  return (context) => resolver.resolve(context);
}

function isResolverClass(key: RateLimitKey | undefined): key is Type<RateLimitKeyResolver> {
  return typeof key === 'function' && typeof (key.prototype as Partial<RateLimitKeyResolver> | undefined)?.resolve === 'function';
}

function describeValue(value: unknown): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'object') return `an object (${Object.prototype.toString.call(value)})`;
  return `a ${typeof value}`;
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
