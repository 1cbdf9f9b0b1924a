import { policyHeader, withUniqueNames } from '../headers/rate-limit-headers.js';
import { storageKeyBase } from '../keys/storage-key.js';
import type { RateLimitCheck } from '../storage/rate-limit-storage.interface.js';
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
  private readonly checks: ChecksByIdentity = new Map();

  constructor(
    rules: readonly RateLimitRule[],
    private readonly keyPrefix: string,
    /** Shared by every rule set of the app, which bounds them all together; none: no caching. */
    private readonly cache?: ChecksCache,
  ) {
    this.rules = withUniqueNames(rules);
    this.policy = policyHeader(this.rules);
  }

  /** The checks for a client identity: `<prefix>:{<identity>}:<rule key suffix>` per rule. */
  checksFor(identity: string): readonly RateLimitCheck[] {
    if (this.cache === undefined || identity.length > MAX_CACHED_IDENTITY) return this.build(identity);
    let checks = this.checks.get(identity);
    if (checks !== undefined) return checks;
    // A copy, so the key kept is the identity alone and not a larger string it was sliced from.
    const kept = flatCopy(identity);
    checks = this.build(kept);
    this.cache.add(this.checks, kept, checks);
    return checks;
  }

  private build(identity: string): readonly RateLimitCheck[] {
    const base = storageKeyBase(this.keyPrefix, identity);
    return this.rules.map((rule) => ({ key: flatJoin(base, rule.keySuffix), rule, hint: -1 }));
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
