import { Controller, Get, Param } from '@nestjs/common';
import { ConcurrencyLimit, RateLimit } from '../../lib/index.js';
import { QuoteSymbolPipe } from '../quotes/quote-symbol.pipe.js';
import { ReportsService, type Report } from './reports.service.js';

@Controller('reports')
export class ReportsController {
  constructor(private readonly reports: ReportsService) {}

  /**
   * A slow report (about 500 ms). Two limits, and a request must pass both:
   * - at most 2 reports of one client IP in flight at once, across every instance: the third
   *   gets a 429 with `Retry-After: 1` until one finishes;
   * - 30 a minute, which bounds what a client costs over time, not just at once.
   */
  @Get(':symbol')
  @RateLimit('30/minute')
  @ConcurrencyLimit(2)
  getReport(@Param('symbol', QuoteSymbolPipe) symbol: string): Promise<Report> {
    return this.reports.build(symbol);
  }
}
