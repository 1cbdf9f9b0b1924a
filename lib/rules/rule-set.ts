import { policyHeader } from '../headers/rate-limit-headers.js';
import { storageKeyBase } from '../keys/storage-key.js';
import type { RateLimitCheck } from '../storage/rate-limit-storage.interface.js';
import type { RateLimitRule } from './rate-limit-rule.js';

/** Clients whose storage keys a rule set remembers; past that the oldest is forgotten. */
const KEY_CACHE_SIZE = 16_384;

/**
 * The rules checked together for one request: their `RateLimit-Policy` value, built once, and
 * the storage keys of recent clients. Reusing one key string per client lets storages find it
 * by a hash V8 computed once, instead of rebuilding, flattening and rehashing it per request.
 */
export class RuleSet {
  readonly policy: string;
  private readonly checks = new Map<string, readonly RateLimitCheck[]>();

  constructor(
    readonly rules: readonly RateLimitRule[],
    private readonly keyPrefix: string,
  ) {
    this.policy = policyHeader(rules);
  }

  /** The checks for a client identity: `<prefix>:{<identity>}:<rule key suffix>` per rule. */
  checksFor(identity: string): readonly RateLimitCheck[] {
    let checks = this.checks.get(identity);
    if (checks === undefined) {
      const base = storageKeyBase(this.keyPrefix, identity);
      checks = this.rules.map((rule) => ({ key: base + rule.keySuffix, rule }));
      if (this.checks.size >= KEY_CACHE_SIZE) this.checks.delete(this.checks.keys().next().value as string);
      this.checks.set(identity, checks);
    }
    return checks;
  }
}
