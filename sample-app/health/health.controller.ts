import { Controller, Get } from '@nestjs/common';
import { HealthCheck, HealthCheckService, type HealthCheckResult } from '@nestjs/terminus';
import { RateLimitHealthIndicator, SkipRateLimit } from '../../lib/index.js';

/**
 * Readiness through @nestjs/terminus: 200 with `{ status: 'ok', info: { ratelimit: { status: 'up',
 * storage, latencyMs, circuit } } }`, or 503 with the limiter under `error` when its storage does
 * not answer within storageTimeout or its circuit breaker is open.
 */
@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly rateLimit: RateLimitHealthIndicator,
  ) {}

  // Load balancers and orchestrators poll this; throttling it would get healthy instances killed.
  @Get()
  @SkipRateLimit()
  @HealthCheck()
  check(): Promise<HealthCheckResult> {
    return this.health.check([() => this.rateLimit.isHealthy()]);
  }
}
