import { Args, Query, Resolver } from '@nestjs/graphql';
import { RateLimit } from '../../lib/index.js';
import { QUOTES_BUCKET, quoteKey, quoteRate } from './quote-rate-limit.js';
import { QuoteSymbolPipe } from './quote-symbol.pipe.js';
import { QuoteModel } from './quote.model.js';
import { QuotesService, type Quote } from './quotes.service.js';

/**
 * `POST /graphql` with `{ quote(symbol: "ACME") { symbol price currency } }`. Limited like
 * `GET /quotes/:symbol`, on the same budget (one bucket). Each `quote` field is one check, so
 * `{ a: quote(symbol: "A") { price } b: quote(symbol: "B") { price } }` counts two. A denied
 * field is null, with an `errors[]` entry `extensions: { code: 'RATE_LIMITED', retryAfter }`:
 * hence nullable.
 */
@Resolver(() => QuoteModel)
export class QuoteResolver {
  constructor(private readonly quotes: QuotesService) {}

  @Query(() => QuoteModel, { nullable: true })
  @RateLimit(quoteRate, { key: quoteKey, bucket: QUOTES_BUCKET })
  quote(@Args('symbol', QuoteSymbolPipe) symbol: string): Quote {
    return this.quotes.getQuote(symbol);
  }
}
