import { createHash } from 'node:crypto';
import { Logger, type Type } from '@nestjs/common';
import type { DiscoveryService, MetadataScanner, Reflector } from '@nestjs/core';
import type { AlgorithmName } from '../algorithms/algorithm.interface.js';
import { getAlgorithm } from '../algorithms/algorithm-registry.js';
import { CONCURRENCY_LIMIT_METADATA, type ConcurrencyLimitMetadata } from '../decorators/concurrency-limit.decorator.js';
import { RATE_LIMIT_METADATA, type RateLimitMetadata } from '../decorators/rate-limit.decorator.js';
import { SKIP_RATE_LIMIT_METADATA } from '../decorators/skip-rate-limit.decorator.js';
import { windowLabel } from './bind-rules.js';
import { routeName } from './route-name.js';

/**
 * Characters of a route id: 24 bits, short enough for a key of a 15-character identity to stay
 * within 30 characters (`rl:{ip:10.100.10.10}:NrjO:fw1m`), the size below which Redis stores it
 * in 32 bytes; routes whose ids collide get longer ones.
 */
export const ROUTE_ID_LENGTH = 4;
/** A SHA-256 in base64url: the longest a route id can grow. */
const LONGEST = 43;

/**
 * The first `length` characters of the SHA-256 (base64url) of a route name such as
 * `QuoteController.quote`. It depends on nothing but the name, so every instance of an app, and
 * every deploy of the same code, keys a route's budget alike. Storage keys carry it in place of
 * the route name, which keeps them short; the start-up log says which route each belongs to.
 */
export function routeId(routeName: string, length = ROUTE_ID_LENGTH): string {
  return createHash('sha256').update(routeName, 'utf8').digest('base64url').slice(0, length);
}

/**
 * A route id for each route name: {@link routeId}, lengthened one character at a time for routes
 * whose ids would collide with each other's or with a bucket name (`reserved`). The result
 * depends only on the set of names, never on their order.
 */
export function assignRouteIds(routeNames: Iterable<string>, reserved: Iterable<string> = []): Map<string, string> {
  const taken = new Set(reserved);
  const ids = new Map<string, string>();
  let pending = [...new Set(routeNames)];
  for (let length = ROUTE_ID_LENGTH; pending.length > 0; length++) {
    if (length > LONGEST) {
      throw new Error(`RateLimitModule: the routes ${pending.join(', ')} get the same storage key; give each a \`bucket\` of its own.`);
    }
    const byId = new Map<string, string[]>();
    for (const name of pending) {
      const id = routeId(name, length);
      const names = byId.get(id);
      if (names === undefined) byId.set(id, [name]);
      else names.push(name);
    }
    pending = [];
    for (const [id, names] of byId) {
      if (names.length === 1 && !taken.has(id)) ids.set(names[0], id);
      else pending.push(...names);
    }
  }
  return ids;
}

/** A route whose keys use its route id, and the key suffixes of its rules (for the start-up log). */
export interface RouteKeyUse {
  readonly route: string;
  /** After the id: `fw1m`, `cc`, or `…` for a rate chosen per request. */
  readonly suffixes: readonly string[];
}

/**
 * Which storage key part stands for which bucket. A bucket named after a route (the default,
 * `Controller.method`) becomes the route's id; any other bucket stays as written.
 */
export class RouteKeys {
  private readonly ids = new Map<string, string>();
  private readonly taken = new Set<string>();

  /**
   * Called once at start-up with every route that uses its default bucket, and the buckets the
   * app names: ids for them all at once (see {@link assignRouteIds}), then one log line saying
   * which key belongs to which route.
   */
  assign(uses: readonly RouteKeyUse[], buckets: Iterable<string>, keyPrefix: string, logger = new Logger('RateLimitModule')): void {
    for (const bucket of buckets) this.taken.add(bucket);
    const assigned = assignRouteIds(uses.map((use) => use.route), this.taken);
    for (const [route, id] of assigned) {
      this.ids.set(route, id);
      this.taken.add(id);
    }
    if (uses.length === 0) return;
    const lines = [...uses]
      .sort((a, b) => (a.route < b.route ? -1 : a.route > b.route ? 1 : 0))
      .map(({ route, suffixes }) => `${route} → ${suffixes.map((suffix) => `${keyPrefix}:{…}:${this.ids.get(route)}:${suffix}`).join(', ')}`);
    logger.log(`RateLimit keys: ${lines.join('; ')}`);
  }

  /** The key part of a bucket: its route's id if it is named after a route, else itself. */
  keyOf(bucket: string): string {
    return this.ids.get(bucket) ?? bucket;
  }

  /**
   * The key part of a route's bucket: the one the app named (`bucket`), else the route's id. A
   * route start-up did not see gets its id now, lengthened if another route or bucket holds it.
   */
  bucketKey(bucket: string | undefined, routeName: string): string {
    if (bucket !== undefined) return this.keyOf(bucket);
    let id = this.ids.get(routeName);
    if (id !== undefined) return id;
    for (let length = ROUTE_ID_LENGTH; id === undefined || this.taken.has(id); length++) {
      if (length > LONGEST) throw new Error(`RateLimitModule: no storage key left for the route ${routeName}; give it a \`bucket\`.`);
      id = routeId(routeName, length);
    }
    this.ids.set(routeName, id);
    this.taken.add(id);
    return id;
  }
}

/**
 * The routes start-up plans whose keys use their route id (a `@RateLimit` or `@ConcurrencyLimit`
 * without `bucket`), and the buckets named by the others. Controllers and providers as the
 * planner visits them: a handler's decorator over its class's, `@SkipRateLimit` exempting.
 */
export function scanRouteBuckets(
  discovery: DiscoveryService,
  scanner: MetadataScanner,
  reflector: Reflector,
  defaultAlgorithm: AlgorithmName,
): { uses: RouteKeyUse[]; buckets: Set<string> } {
  const suffixes = new Map<string, Set<string>>();
  const buckets = new Set<string>();
  const use = (route: string, suffix: string) => {
    let known = suffixes.get(route);
    if (known === undefined) suffixes.set(route, (known = new Set()));
    known.add(suffix);
  };
  for (const { metatype, inject } of [...discovery.getControllers(), ...discovery.getProviders()]) {
    if (typeof metatype !== 'function' || inject || !metatype.prototype) continue;
    const type = metatype as Type;
    for (const name of scanner.getAllMethodNames(type.prototype)) {
      const handler = (type.prototype as Record<string, unknown>)[name];
      if (typeof handler !== 'function') continue;
      const targets = [handler, type];
      if (reflector.getAllAndOverride<boolean | undefined>(SKIP_RATE_LIMIT_METADATA, targets) === true) continue;
      const route = routeName(type, handler);
      const limit = reflector.getAllAndOverride<RateLimitMetadata | undefined>(RATE_LIMIT_METADATA, targets);
      if (limit?.options.bucket !== undefined) buckets.add(limit.options.bucket);
      else if (limit !== undefined) {
        const { code } = getAlgorithm(limit.options.algorithm ?? defaultAlgorithm);
        if (typeof limit.rate === 'function') use(route, `${code}…`);
        else for (const rate of limit.rate) use(route, `${code}${windowLabel(rate.windowMs)}`);
      }
      const concurrency = reflector.getAllAndOverride<ConcurrencyLimitMetadata | undefined>(CONCURRENCY_LIMIT_METADATA, targets);
      if (concurrency?.options.bucket !== undefined) buckets.add(concurrency.options.bucket);
      else if (concurrency !== undefined) use(route, 'cc');
    }
  }
  return { uses: [...suffixes].map(([route, known]) => ({ route, suffixes: [...known] })), buckets };
}
