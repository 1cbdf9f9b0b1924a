import { BadRequestException, Controller, Get, Query } from '@nestjs/common';
import { RateLimit } from '../../lib/index.js';

export interface Company {
  readonly symbol: string;
  readonly name: string;
}

export interface SearchResults {
  readonly query: string;
  readonly results: readonly Company[];
}

const COMPANIES: readonly Company[] = [
  { symbol: 'ACME', name: 'Acme Corporation' },
  { symbol: 'AAPL', name: 'Apple Inc.' },
  { symbol: 'IBM', name: 'International Business Machines' },
  { symbol: 'INTC', name: 'Intel Corporation' },
  { symbol: 'MSFT', name: 'Microsoft Corporation' },
];

@Controller('search')
export class SearchController {
  /**
   * Company search, under a limit being rolled out: 2 a minute per IP, in shadow mode. The limit
   * is checked and charged as if enforced, and the RateLimit headers show it, but nothing is
   * refused: a request over it goes through, and counts as `shadow_denied` in GET /metrics.
   * Once those numbers show what 2/minute would refuse, drop `mode: 'shadow'` to enforce it.
   */
  @Get()
  @RateLimit('2/minute', { mode: 'shadow' })
  search(@Query('q') q: unknown): SearchResults {
    if (typeof q !== 'string' || q.trim() === '' || q.length > 50) {
      throw new BadRequestException('q must be 1-50 characters, e.g. /search?q=corp');
    }
    const query = q.trim().toLowerCase();
    const results = COMPANIES.filter((c) => c.symbol.toLowerCase().startsWith(query) || c.name.toLowerCase().includes(query));
    return { query: q.trim(), results };
  }
}
