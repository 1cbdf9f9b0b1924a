import { Inject } from '@nestjs/common';
import { Args, Resolver, Subscription } from '@nestjs/graphql';
import { ConcurrencyLimit, RateLimit } from '../../lib/index.js';
import { observableIterator } from './observable-iterator.js';
import { checkPriceFeedTiming, PRICE_FEED_LEASE_MS, PRICE_FEED_TIMING, priceFeed, type PriceFeedTiming } from './price-feed.js';
import { QuoteSymbolPipe } from './quote-symbol.pipe.js';
import { QuoteModel } from './quote.model.js';
import { QuotesService, type Quote } from './quotes.service.js';

/**
 * `subscription { priceChanged(symbol: "ACME") { symbol price } }` over graphql-ws on /graphql:
 * the price feed of gRPC's `WatchPrices`. Per client address (the socket's upgrade request), at
 * most 10 subscribe operations a minute and 2 subscriptions open at once. A refused subscribe is
 * an error with `extensions: { code: 'RATE_LIMITED', retryAfter }`; a slot comes back when the
 * client unsubscribes, its socket closes, or the feed ends by itself (`lifetimeMs`).
 */
@Resolver(() => QuoteModel)
export class PriceChangesResolver {
  constructor(
    private readonly quotes: QuotesService,
    @Inject(PRICE_FEED_TIMING) private readonly timing: PriceFeedTiming,
  ) {
    checkPriceFeedTiming(timing);
  }

  // each event is the quote itself, not `{ priceChanged: quote }`
  @Subscription(() => QuoteModel, { resolve: (quote: Quote) => quote })
  @RateLimit('10/minute')
  @ConcurrencyLimit(2, { leaseMs: PRICE_FEED_LEASE_MS })
  priceChanged(@Args('symbol', QuoteSymbolPipe) symbol: string): AsyncIterableIterator<Quote> {
    return observableIterator(priceFeed(this.quotes.getQuote(symbol), this.timing));
  }
}
