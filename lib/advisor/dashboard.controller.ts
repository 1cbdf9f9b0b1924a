import { randomBytes } from 'node:crypto';
import { BadRequestException, Controller, Get, Query, Res, UseGuards, type CanActivate, type Type } from '@nestjs/common';
import { SkipRateLimit } from '../decorators/skip-rate-limit.decorator.js';
import type { AdvisorReport } from './advisor-report.js';
import { parseAdvisorQuery } from './advisor-query.js';
import { dashboardContentSecurityPolicy, dashboardPage } from './dashboard-page.js';
import { LimitAdvisor } from './limit-advisor.js';

/** Express's response and Fastify's reply both set a header with `header(name, value)`. */
interface HeaderSink {
  header(name: string, value: string): unknown;
}

/**
 * The advisor's dashboard at `path` (GET `path`: the page; GET `path/report.json`: the report),
 * behind `guard`. A class per app, since the path and the guard are the app's; it is not limited
 * itself (its traffic would be in the figures it shows) and never cached.
 */
export function dashboardController(path: string, guard: Type<CanActivate>): Type {
  @Controller(path)
  @UseGuards(guard)
  @SkipRateLimit()
  class RateLimitDashboardController {
    constructor(readonly advisor: LimitAdvisor) {}

    @Get()
    page(@Res({ passthrough: true }) response: HeaderSink): string {
      const nonce = randomBytes(16).toString('base64');
      response.header('content-type', 'text/html; charset=utf-8');
      response.header('content-security-policy', dashboardContentSecurityPolicy(nonce));
      response.header('cache-control', 'no-store');
      response.header('x-content-type-options', 'nosniff');
      return dashboardPage({ nonce });
    }

    @Get('report.json')
    report(@Query() query: Record<string, unknown>, @Res({ passthrough: true }) response: HeaderSink): Promise<AdvisorReport> {
      response.header('cache-control', 'no-store');
      let parsed;
      try {
        parsed = parseAdvisorQuery(query);
      } catch (error) {
        throw new BadRequestException((error as Error).message);
      }
      return this.advisor.report(parsed).catch((error: unknown) => {
        if (error instanceof RangeError) throw new BadRequestException(error.message);
        throw error;
      });
    }
  }
  return RateLimitDashboardController;
}
