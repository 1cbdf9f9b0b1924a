import type { RateLimitRule } from '../rules/rate-limit-rule.js';
import type { ConcurrencyDecision } from '../concurrency/concurrency-decision.js';
import type { RateLimitResult } from './rate-limit-decision.js';

/** Injection token of the storage the guard uses. */
export const RATE_LIMIT_STORAGE = Symbol('RATE_LIMIT_STORAGE');

/** One rule to check, and the storage key of the client's state for it. */
export interface RateLimitCheck {
  readonly key: string;
  readonly rule: RateLimitRule;
  /**
   * Scratch space a storage may use to find the key's state again without a lookup (MemoryStorage:
   * its slot). Present (-1 at first) only on the checks a rule set builds, and reuses per client,
   * whose keys are flat strings of their own; a storage must validate it, since several storages
   * may see one check.
   */
  hint?: number;
}

/**
 * A check of a rule the limit advisor follows, as a rule set builds it: with what the advisor
 * keeps per client, on the check the request has used rather than on an object of its own.
 */
export interface ObservedCheck extends RateLimitCheck {
  /** The advisor's record of the rule's policy, once it has seen it. */
  advisorPolicy: unknown;
  /** The client identity's `identityHash`, computed once: where the heavy-hitters sketch counts the client. */
  readonly sketchHash: number;
}

/**
 * How long a caller waits for an asynchronous operation, passed to the operations that change
 * state. A storage that can (RedisStorage) sets `sentAt` when it sends the operation and makes
 * sure the store does nothing with it once `timeoutMs` have passed since: the caller reports
 * the operation failed when its time is up, and a failure it reported must never take effect
 * later. A storage that leaves `sentAt` unset promises nothing of the kind: the caller then
 * gives up when the storage shows no sign of life (see ProtectedStorage).
 */
export interface StorageDeadline {
  /** How long the caller waits once the operation is sent, in ms. */
  readonly timeoutMs: number;
  /** `performance.now()` when the storage sent the operation. */
  sentAt?: number;
}

/**
 * Where limiter state lives. `check` decides every rule of one request in one call (one round
 * trip for a remote store), all or nothing: a denied request charges none of the rules.
 * Return synchronously when you can; the guard awaits only what is a promise.
 */
export interface RateLimitStorage {
  check(checks: readonly RateLimitCheck[], cost: number, deadline?: StorageDeadline): RateLimitResult | Promise<RateLimitResult>;
  /**
   * A denial this process already knows of, without asking the store (RedisStorage's block
   * cache), or undefined. The guard asks it first, and again with `unreachable` when the store
   * cannot answer (an open circuit, a failed call): then what is known holds for longer, as
   * nothing newer can be learnt. Its answers say nothing of the store's health.
   */
  cachedDenial?(checks: readonly RateLimitCheck[], cost: number, unreachable?: boolean): RateLimitResult | undefined;
  /** What `check` would answer now, charging nothing. */
  peek?(checks: readonly RateLimitCheck[], cost: number, deadline?: StorageDeadline): RateLimitResult | Promise<RateLimitResult>;
  /**
   * Takes `units` more from every check's state, whatever its limit (`units` > 0), or gives
   * `-units` back (`units` < 0, never beyond a fresh state); answers what `peek(checks, 1)` would
   * then. A blocked key is left as it is.
   */
  adjust?(checks: readonly RateLimitCheck[], units: number, deadline?: StorageDeadline): RateLimitResult | Promise<RateLimitResult>;
  /**
   * Gives back the `cost` units an admitted check took, `chargedAt` being its result's
   * `chargedAt`, as far as that charge still counts: a window's units only while it lasts (the
   * sliding log's: that very entry), a bucket's only the part not drained since. It never makes
   * room in a later window. A blocked key is left as it is. What `@RateLimit`'s `count` needs.
   */
  refund?(checks: readonly RateLimitCheck[], cost: number, chargedAt: number, deadline?: StorageDeadline): void | Promise<void>;
  /** Forgets the keys' state, blocks included. Every app instance sharing the storage sees it. */
  reset?(checks: readonly RateLimitCheck[], deadline?: StorageDeadline): void | Promise<void>;
  /** Denies the keys for `durationMs` from now; the state they held is dropped. */
  block?(checks: readonly RateLimitCheck[], durationMs: number, deadline?: StorageDeadline): void | Promise<void>;
  /**
   * Takes one of `limit` concurrency slots under `key`, as lease `leaseId`, held until released
   * or until `leaseMs` have passed (an app instance that died releases nothing).
   */
  acquire?(key: string, limit: number, leaseMs: number, leaseId: string, deadline?: StorageDeadline): ConcurrencyDecision | Promise<ConcurrencyDecision>;
  /** Gives back lease `leaseId` under `key`; releasing a lease twice, or an expired one, does nothing. */
  release?(key: string, leaseId: string): void | Promise<void>;
  /**
   * Resolves once the store answers a round trip (Redis: PING; on a Cluster, every master).
   * For health checks (`RateLimitHealthIndicator`), which bound it by `storageTimeout`: it needs
   * no deadline of its own. Without it, a health check judges the storage by the circuit breaker alone.
   */
  ping?(): void | Promise<void>;
  /** Connects, if the storage needs to. The module awaits it once, at start-up. */
  init?(): void | Promise<void>;
  /** Releases only what the storage opened itself. The module calls it on application shutdown. */
  close?(): void | Promise<void>;
}
