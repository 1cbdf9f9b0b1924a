import { Controller, Get, Header } from '@nestjs/common';
import { SkipRateLimit } from '../../lib/index.js';
import { SampleTelemetry } from '../telemetry.js';

/** The Prometheus text format's content type. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

@Controller('metrics')
export class MetricsController {
  constructor(private readonly telemetry: SampleTelemetry) {}

  /**
   * Every OpenTelemetry metric of the process, the rate limiter's among them
   * (`ratelimit_requests_total{ratelimit_policy, ratelimit_outcome}`...), for Prometheus to scrape.
   * Not limited: a throttled scrape would leave holes in the very graphs that show throttling.
   * In production, keep it off the public internet (another port, or the network's rules).
   */
  @Get()
  @SkipRateLimit()
  @Header('Content-Type', PROMETHEUS_CONTENT_TYPE)
  scrape(): Promise<string> {
    return this.telemetry.scrape();
  }
}
