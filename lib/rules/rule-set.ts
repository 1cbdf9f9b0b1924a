import { policyHeader, withUniqueNames } from '../headers/rate-limit-headers.js';
import { storageKeyBase } from '../keys/storage-key.js';
import type { ObservedCheck, RateLimitCheck } from '../storage/rate-limit-storage.interface.js';
import { identityHash } from '../advisor/space-saving.js';
import { flatCopy } from '../utils/flat-copy.js';
import type { ChecksByIdentity, ChecksCache } from './checks-cache.js';
import type { RateLimitRule } from './rate-limit-rule.js';

/**
 * Longest identity whose checks are cached. Longer ones are hashed into their storage keys on
 * every request and never kept: a client choosing its own identity (an API key header, say)
 * must not be able to park large strings in the cache.
 */
const MAX_CACHED_IDENTITY = 96;

/**
 * The rules checked together for one request: their `RateLimit-Policy` value, built once, and
 * the storage keys of recent clients. Reusing one key string per client lets storages find it
 * by a hash V8 computed once, instead of rebuilding, flattening and rehashing it per request.
 */
export class RuleSet {
  readonly policy: string;
  readonly rules: readonly RateLimitRule[];
  /** Whether the limit advisor follows any of the rules (see `RateLimitRule.observed`). */
  readonly observed: boolean;
  private readonly checks: ChecksByIdentity = new Map();
  /** The clients of each prefixed resolver (`byValue`), by value; as many maps as resolvers. */
  private readonly byPrefix = new Map<string, ChecksByIdentity>();

  constructor(
    rules: readonly RateLimitRule[],
    private readonly keyPrefix: string,
    /** Shared by every rule set of the app, which bounds them all together; none: no caching. */
    private readonly cache?: ChecksCache,
  ) {
    this.rules = withUniqueNames(rules);
    this.policy = policyHeader(this.rules);
    this.observed = this.rules.some((rule) => rule.observed === true);
  }

  /** The checks for a client identity: `<prefix>:{<identity>}:<rule key suffix>` per rule. */
  checksFor(identity: string): readonly RateLimitCheck[] {
    if (this.cache === undefined || identity.length > MAX_CACHED_IDENTITY) return this.build(identity);
    return this.checks.get(identity) ?? this.remember(this.checks, identity);
  }

  /**
   * Finds the checks for identity `<prefix>:<value>` by the value alone; made once per route,
   * so a request pays one lookup. A fresh concatenation would be flattened and hashed on every
   * request; the value, as a header parser made it, is only hashed.
   */
  byValue(prefix: string): (value: string) => readonly RateLimitCheck[] {
    let clients = this.byPrefix.get(prefix);
    if (clients === undefined) this.byPrefix.set(prefix, (clients = new Map()));
    const table = clients;
    return (value) => {
      if (this.cache === undefined || prefix.length + 1 + value.length > MAX_CACHED_IDENTITY) return this.build(`${prefix}:${value}`);
      return table.get(value) ?? this.remember(table, value, prefix);
    };
  }

  /** Builds and caches the checks of a client first seen; `prefix`: `lookup` is a prefixed resolver's value. */
  private remember(clients: ChecksByIdentity, lookup: string, prefix?: string): readonly RateLimitCheck[] {
    // A copy, so what is kept is the identity alone and not a larger string it was sliced from.
    const kept = flatCopy(lookup);
    const checks = this.build(prefix === undefined ? kept : `${prefix}:${kept}`);
    this.cache!.add(clients, kept, checks);
    return checks;
  }

  private build(identity: string): readonly RateLimitCheck[] {
    const base = storageKeyBase(this.keyPrefix, identity);
    // each policy has a sketch of its own: the identity alone tells its clients apart
    let hash: number | undefined;
    return this.rules.map((rule) => {
      const key = flatJoin(base, rule.keySuffix);
      if (rule.observed !== true) return { key, rule, hint: -1 };
      // every field from the start: one shape for every observed check
      const observed: ObservedCheck = { key, rule, hint: -1, advisorPolicy: undefined, sketchHash: (hash ??= identityHash(identity)) };
      return observed;
    });
  }
}

/**
 * One flat string: joining copies both parts into a new string, where `+` would make a tree of
 * them. A storage keeps it as its key, retaining nothing else, and later lookups with this very
 * string compare by pointer.
 */
function flatJoin(a: string, b: string): string {
  return [a, b].join('');
}
