import type { CanActivate, ExecutionContext, Type } from '@nestjs/common';
import type { Cluster, Redis, RedisOptions } from 'ioredis';
import type { AlgorithmName } from './algorithms/algorithm.interface.js';
import type { RateLimitContextAdapter } from './contexts/rate-limit-context-adapter.interface.js';
import type { CircuitBreakerOptions } from './resilience/circuit-breaker.js';
import type { RateLimitHeaderMode } from './headers/rate-limit-headers.js';
import type { RateLimitKey } from './keys/rate-limit-key-resolver.interface.js';
import type { RateLimitStorage } from './storage/rate-limit-storage.interface.js';
import type { RateLimitDecisionEvent } from './observability/rate-limit-decision-event.js';

/** See `RateLimitModuleOptions.rmqDeniedEvents`. */
export type RmqDeniedEvents = 'dead-letter' | 'requeue';

export interface MemoryStorageConfig {
  type: 'memory';
  /** Hard bound on stored keys (LRU). Default 100,000. */
  maxKeys?: number;
}

export interface RedisStorageConfig {
  type: 'redis';
  /** A client you own (Redis or Cluster); never closed by the module. */
  client?: Redis | Cluster;
  url?: string;
  options?: RedisOptions;
  /** Local denial of keys Redis denied, until their retry-after ends. Default `{ maxKeys: 10_000 }`. */
  blockCache?: { maxKeys?: number } | false;
}

/** Whether denials are refused (`enforce`) or only reported (`shadow`). */
export type RateLimitMode = 'enforce' | 'shadow';

/** What to do when the storage fails or times out. */
export type StorageErrorPolicy = 'allow' | 'deny' | 'memory';

/** The limit advisor: what any candidate limit would do to the traffic seen (docs/choosing-limits.md). */
export interface RateLimitAdvisorOptions {
  /**
   * Show identities as keyed hashes (HMAC-SHA256) in reports, the dashboard and the CLI: `true`
   * (a random key per process) or `{ secret }`, which instances sharing Redis must share so
   * their hashes agree. For identities that are personal data or secrets (user IDs, emails, API keys).
   */
  redactIdentities?: boolean | { secret: string };
  /** Identities each policy's heavy-hitters sketch follows (Space-Saving's k). Default 128: every client above 1/128 of the traffic. */
  trackedIdentities?: number;
  /** How often an instance adds what it saw to Redis, in ms (Redis storage only). Default 5,000. */
  flushInterval?: number;
  /** Milliseconds since the epoch that reports end at: the storage's injected clock in tests. Default `Date.now`. */
  clock?: () => number;
}

/** The advisor's dashboard page, served by an opt-in controller. */
export interface RateLimitDashboardOptions {
  /** Where the page is served, e.g. `admin/rate-limits`; its report at `<path>/report.json`. */
  path: string;
  /** Who may see it: a guard class the app provides (resolved like `@UseGuards`). Required. */
  guard: Type<CanActivate>;
}

export interface RateLimitModuleOptions {
  /** Default `{ type: 'memory' }`. */
  storage?: RateLimitStorage | MemoryStorageConfig | RedisStorageConfig;
  /** One budget per client across all routes, checked together with any route limits. */
  defaultLimit?: string | readonly string[];
  /** Default key resolver for every limit; the client IP when absent. */
  key?: RateLimitKey;
  /** Algorithm of limits that do not name one. Default `fixed-window`. */
  algorithm?: AlgorithmName;
  /** Prefix of every storage key. Default `rl`. */
  keyPrefix?: string;
  /** Which rate-limit headers to send. Default `ietf`. */
  headers?: RateLimitHeaderMode;
  /** `message` of the 429 body. Default `Rate limit exceeded`. */
  errorMessage?: string;
  /**
   * When the storage fails, times out or its circuit is open: `allow` (default) lets requests
   * through and logs a warning; `deny` answers 503 with `Retry-After`; `memory` falls back to an
   * in-process MemoryStorage with the same rules until the storage is back.
   */
  onStorageError?: StorageErrorPolicy;
  /** Longest wait for one storage answer, in ms. Default 50. */
  storageTimeout?: number;
  /** Stops calling a failing storage for a cool-down. Default `{ failureThreshold: 5, cooldownMs: 500 }`. */
  circuitBreaker?: CircuitBreakerOptions;
  /**
   * Adapters for context types beyond the built-in `http`, `graphql`, `ws` and `rpc` (or to
   * replace one): see {@link RateLimitContextAdapter}. A limited handler in a context no adapter
   * serves is refused, with a logged error.
   */
  contextAdapters?: readonly RateLimitContextAdapter[];
  /**
   * `enforce` (default) refuses what the limits deny; `shadow` decides and charges exactly the
   * same but refuses nothing: a would-be denial is let through, counted as `shadow_denied` and
   * logged. Try a limit in shadow first, then enforce it. `@RateLimit`'s `mode` overrides it.
   */
  mode?: RateLimitMode;
  /** In shadow mode, send the rate-limit headers still (default true), so clients see the quota to come. */
  shadowHeaders?: boolean;
  /**
   * Called, synchronously, with every decision (route, policy, outcome, identity, decision): for
   * logging and analytics. A hook that throws is logged; the request goes on.
   */
  onDecision?: (event: RateLimitDecisionEvent) => void;
  /**
   * What a RabbitMQ server with manual acknowledgement (`noAck: false`) does with an event it
   * refuses: `dead-letter` (default) nacks it without requeueing, so the broker moves it to the
   * queue's dead-letter exchange (and drops it if the queue has none); `requeue` nacks it back
   * onto the queue, to be delivered again at once. Other transports cannot keep a refused event:
   * it is dropped, counted and logged (see docs/transports.md).
   */
  rmqDeniedEvents?: RmqDeniedEvents;
  /** 429 and 503 bodies as RFC 9457 problem details (`application/problem+json`). Default false. */
  problemDetails?: boolean;
  /**
   * The limit advisor: every policy (enforced or shadow) learns how many requests each client
   * makes per window, so `RateLimitService.advisorReport()` can tell what any candidate limit
   * would refuse. Off by default; `@RateLimit`'s `advise: false` leaves a route out.
   */
  advisor?: boolean | RateLimitAdvisorOptions;
  /** Serves the advisor's dashboard page (needs `advisor`). Off by default. */
  dashboard?: RateLimitDashboardOptions;
  /** Return true to let a request through without counting it. */
  skip?(context: ExecutionContext): boolean | Promise<boolean>;
}
