import type { ExecutionContext } from '@nestjs/common';
import type { AlgorithmName } from './algorithms/algorithm.interface.js';
import { getAlgorithm } from './algorithms/algorithm-registry.js';
import { registerContextAdapter } from './contexts/context-adapters.js';
import { HEADER_MODES, type RateLimitHeaderMode } from './headers/rate-limit-headers.js';
import type { RateLimitKey } from './keys/rate-limit-key-resolver.interface.js';
import type { CircuitBreakerOptions } from './resilience/circuit-breaker.js';
import type { RateLimitMode, RateLimitModuleOptions, RmqDeniedEvents, StorageErrorPolicy } from './rate-limit.options.js';
import { resolveAdvisorConfig, type AdvisorConfig } from './advisor/advisor-config.js';
import type { RateLimitDecisionEvent } from './observability/rate-limit-decision-event.js';
import { parseRate, type ParsedRate } from './rules/parse-rate.js';

/** Injection token of the validated, start-up-parsed module settings. */
export const RATE_LIMIT_CONFIG = Symbol('RATE_LIMIT_CONFIG');

export interface RateLimitConfig {
  readonly defaultLimit?: readonly ParsedRate[];
  readonly key?: RateLimitKey;
  readonly algorithm: AlgorithmName;
  readonly keyPrefix: string;
  readonly headers: RateLimitHeaderMode;
  readonly errorMessage: string;
  readonly skip?: (context: ExecutionContext) => boolean | Promise<boolean>;
  readonly onStorageError: StorageErrorPolicy;
  readonly storageTimeoutMs: number;
  readonly circuitBreaker: CircuitBreakerOptions;
  readonly mode: RateLimitMode;
  readonly shadowHeaders: boolean;
  readonly onDecision?: (event: RateLimitDecisionEvent) => void;
  readonly problemDetails: boolean;
  readonly rmqDeniedEvents: RmqDeniedEvents;
  /** The limit advisor's settings; undefined when it is off. */
  readonly advisor?: AdvisorConfig;
}

export const RATE_LIMIT_MODES: readonly RateLimitMode[] = ['enforce', 'shadow'];

export function assertMode(mode: unknown, where: string): asserts mode is RateLimitMode {
  if (!RATE_LIMIT_MODES.includes(mode as RateLimitMode)) throw new Error(`${where}: mode must be 'enforce' or 'shadow', got ${String(mode)}`);
}

export const STORAGE_ERROR_POLICIES: readonly StorageErrorPolicy[] = ['allow', 'deny', 'memory'];

export function assertStorageErrorPolicy(policy: unknown, where: string): asserts policy is StorageErrorPolicy {
  if (!STORAGE_ERROR_POLICIES.includes(policy as StorageErrorPolicy)) {
    throw new Error(`${where}: onStorageError must be 'allow', 'deny' or 'memory', got ${String(policy)}`);
  }
}

const KEY_PREFIX = /^[A-Za-z0-9_.:-]{1,32}$/;

/** Validates options once, at start-up, with errors that say what to change. */
export function resolveConfig(options: RateLimitModuleOptions = {}): RateLimitConfig {
  const keyPrefix = options.keyPrefix ?? 'rl';
  if (!KEY_PREFIX.test(keyPrefix)) {
    throw new Error(`RateLimitModule: keyPrefix "${keyPrefix}" must be 1-32 characters of A-Z a-z 0-9 _ . : -`);
  }
  const headers = options.headers ?? 'ietf';
  if (!HEADER_MODES.includes(headers)) {
    throw new Error(`RateLimitModule: headers must be one of 'ietf', 'legacy', 'both' or false, got ${String(headers)}`);
  }
  const algorithm = options.algorithm ?? 'fixed-window';
  getAlgorithm(algorithm);
  const onStorageError = options.onStorageError ?? 'allow';
  assertStorageErrorPolicy(onStorageError, 'RateLimitModule');
  const storageTimeoutMs = options.storageTimeout ?? 50;
  if (!(storageTimeoutMs > 0 && storageTimeoutMs <= 60_000)) {
    throw new Error(`RateLimitModule: storageTimeout must be a number of ms in (0, 60000], got ${String(options.storageTimeout)}`);
  }
  for (const adapter of options.contextAdapters ?? []) registerContextAdapter(adapter);
  const mode = options.mode ?? 'enforce';
  assertMode(mode, 'RateLimitModule');
  if (options.onDecision !== undefined && typeof options.onDecision !== 'function') {
    throw new Error(`RateLimitModule: onDecision must be a function, got ${typeof options.onDecision}`);
  }
  const rmqDeniedEvents = options.rmqDeniedEvents ?? 'dead-letter';
  if (rmqDeniedEvents !== 'dead-letter' && rmqDeniedEvents !== 'requeue') {
    throw new Error(`RateLimitModule: rmqDeniedEvents must be 'dead-letter' or 'requeue', got ${String(options.rmqDeniedEvents)}`);
  }
  return {
    defaultLimit: options.defaultLimit === undefined ? undefined : parseRate(options.defaultLimit),
    key: options.key,
    algorithm,
    keyPrefix,
    headers,
    errorMessage: options.errorMessage ?? 'Rate limit exceeded',
    skip: options.skip,
    onStorageError,
    storageTimeoutMs,
    circuitBreaker: options.circuitBreaker ?? {},
    mode,
    shadowHeaders: options.shadowHeaders ?? true,
    onDecision: options.onDecision,
    problemDetails: options.problemDetails === true,
    rmqDeniedEvents,
    advisor: resolveAdvisorConfig(options),
  };
}
