import { Controller, Get, Param } from '@nestjs/common';
import { RateLimit } from '../../lib/index.js';
import { QUOTES_BUCKET, quoteKey, quoteRate } from './quote-rate-limit.js';
import { QuoteSymbolPipe } from './quote-symbol.pipe.js';
import { QuotesService, type Quote } from './quotes.service.js';

@Controller('quotes')
export class QuotesController {
  constructor(private readonly quotes: QuotesService) {}

  /**
   * Paid users get 1000/minute on their own budget, wherever they call from. Everyone else,
   * free users included, shares the 100/minute of their IP: a free token buys no extra quota.
   * The GraphQL `quote` query draws on the same budget: the same bucket.
   */
  @Get(':symbol')
  @RateLimit(quoteRate, { key: quoteKey, bucket: QUOTES_BUCKET })
  getQuote(@Param('symbol', QuoteSymbolPipe) symbol: string): Quote {
    return this.quotes.getQuote(symbol);
  }
}
