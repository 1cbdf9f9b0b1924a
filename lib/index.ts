export { RateLimitModule } from './rate-limit.module.js';
export type {
  RateLimitModuleOptions,
  MemoryStorageConfig,
  RedisStorageConfig,
  StorageErrorPolicy,
  RateLimitMode,
  RmqDeniedEvents,
  RateLimitAdvisorOptions,
  RateLimitDashboardOptions,
} from './rate-limit.options.js';
export { RATE_LIMIT_MODULE_OPTIONS } from './rate-limit.module-definition.js';
export { RATE_LIMIT_CONFIG, type RateLimitConfig } from './rate-limit.config.js';

export {
  RateLimit,
  RATE_LIMIT_METADATA,
  type RateLimitOptions,
  type RateLimitRate,
  type RateLimitRateFunction,
  type RateLimitCostFunction,
  type RateLimitMetadata,
} from './decorators/rate-limit.decorator.js';
export { SkipRateLimit, SKIP_RATE_LIMIT_METADATA } from './decorators/skip-rate-limit.decorator.js';
export {
  ConcurrencyLimit,
  CONCURRENCY_LIMIT_METADATA,
  type ConcurrencyLimitOptions,
  type ConcurrencyLimitMetadata,
} from './decorators/concurrency-limit.decorator.js';
export type { ConcurrencyRule } from './concurrency/concurrency-rule.js';

export { RateLimitGuard } from './guards/rate-limit.guard.js';
export { RateLimitService } from './service/rate-limit.service.js';
export { METER_NAME, type RateLimitOutcome, type DeniedEventAction } from './observability/rate-limit-metrics.js';
export type { RateLimitDecisionEvent } from './observability/rate-limit-decision-event.js';
export {
  RateLimitHealthIndicator,
  type RateLimitHealthDetails,
  type RateLimitHealthResult,
} from './health/rate-limit.health-indicator.js';
export type { RateLimitTarget, RateLimitTargetOptions, RateLimitStatus } from './service/rate-limit-target.js';
export { RateLimitExceededException, type RateLimitExceededDetails } from './exceptions/rate-limit-exceeded.exception.js';
export { RateLimitUnavailableException } from './exceptions/rate-limit-unavailable.exception.js';
export { RateLimitExceptionFilter } from './filters/rate-limit-exception.filter.js';

export type { RateLimitContextAdapter, RateLimitRefusal } from './contexts/rate-limit-context-adapter.interface.js';
export { rateLimitRequest, rateLimitClientIp, registerContextAdapter } from './contexts/context-adapters.js';
export { refusalPayload, type RateLimitRefusalPayload } from './contexts/refusal-payload.js';
export { httpContext } from './contexts/http.context-adapter.js';
export { graphqlContext } from './contexts/graphql.context-adapter.js';
export { wsContext } from './contexts/ws.context-adapter.js';
export { rpcContext } from './contexts/rpc.context-adapter.js';
export { CircuitBreaker, type CircuitBreakerOptions, type CircuitState } from './resilience/circuit-breaker.js';
export { StorageUnavailableError } from './resilience/storage-unavailable.error.js';
export { CheckFailedError } from './storage/check-failed.error.js';

export { parseRate, parseDuration, InvalidRateError, InvalidDurationError, type ParsedRate } from './rules/parse-rate.js';
export type { RateLimitRule, RateLimitCount } from './rules/rate-limit-rule.js';

export type {
  RateLimitKeyResolver,
  RateLimitKeyFunction,
  RateLimitKey,
} from './keys/rate-limit-key-resolver.interface.js';
export { PrefixedKeyResolver } from './keys/prefixed-key-resolver.js';
export { IpKeyResolver } from './keys/ip.key-resolver.js';
export { HeaderKeyResolver } from './keys/header.key-resolver.js';
export { UserKeyResolver } from './keys/user.key-resolver.js';
export { clientIp, normalizeIp } from './keys/client-ip.js';

export {
  RATE_LIMIT_STORAGE,
  type RateLimitStorage,
  type RateLimitCheck,
  type StorageDeadline,
} from './storage/rate-limit-storage.interface.js';
export { LateOperationError } from './storage/late-operation.error.js';
export { ClientClosedRequestException } from './outcomes/client-closed-request.exception.js';
export type { RateLimitDecision, RateLimitResult } from './storage/rate-limit-decision.js';
export type { ConcurrencyDecision } from './concurrency/concurrency-decision.js';
export { MemoryStorage, type MemoryStorageOptions } from './storage/memory.storage.js';
export { RedisStorage, type RedisStorageOptions } from './storage/redis.storage.js';

export type { AlgorithmName } from './algorithms/algorithm.interface.js';
export type { RateLimitHeaderMode } from './headers/rate-limit-headers.js';
export { LimitAdvisor } from './advisor/limit-advisor.js';
export type {
  AdvisorReport,
  AdvisorPolicyReport,
  AdvisorCandidate,
  AdvisorSuggestion,
  AdvisorTopIdentity,
  AdvisorTimelinePoint,
  AdvisorDistributionPoint,
  AdvisorEstimateKind,
  ShareRange,
} from './advisor/advisor-report.js';
export type { AdvisorQuery } from './advisor/policy-report.js';
export { readSharedReport, type SharedReportOptions } from './advisor/shared-report.js';
export { InvalidAdvisorQueryError } from './advisor/advisor-query.js';
