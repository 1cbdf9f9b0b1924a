import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod, Payload } from '@nestjs/microservices';
import type { Observable } from 'rxjs';
import { ConcurrencyLimit, RateLimit } from '../../lib/index.js';
import { QUOTES_BUCKET, quoteKey, quoteRate } from './quote-rate-limit.js';
import { checkPriceFeedTiming, PRICE_FEED_LEASE_MS, PRICE_FEED_TIMING, priceFeed, type PriceFeedTiming } from './price-feed.js';
import { GrpcQuoteSymbolPipe } from './quote-symbol.pipe.js';
import { QuotesService, type Quote } from './quotes.service.js';

/**
 * `Quotes` of sample-app/proto/quotes.proto, served on GRPC_PORT beside the HTTP API (main.ts).
 * A call's default key is its caller's address (the call's peer), `ip:<address>`: the identity
 * HTTP's client IP gets, so one client's calls and requests count together.
 */
@Controller()
export class QuotesGrpcController {
  constructor(
    private readonly quotes: QuotesService,
    @Inject(PRICE_FEED_TIMING) private readonly timing: PriceFeedTiming,
  ) {
    checkPriceFeedTiming(timing);
  }

  /**
   * `GET /quotes/:symbol` over gRPC, on its budget: the same rate and key functions and bucket,
   * so 100 quotes a minute per client address, whichever way they come. A gRPC caller is always
   * on the free plan (quote-rate-limit.ts). The 101st ends with RESOURCE_EXHAUSTED and a
   * `retry-after` trailer; a bad symbol with INVALID_ARGUMENT, after it was counted, as on HTTP.
   */
  @GrpcMethod('Quotes', 'GetQuote')
  @RateLimit(quoteRate, { key: quoteKey, bucket: QUOTES_BUCKET })
  getQuote(@Payload('symbol', GrpcQuoteSymbolPipe) symbol: string): Quote {
    return this.quotes.getQuote(symbol);
  }

  /**
   * The symbol's price at once, then every `tickMs`, until the client cancels the call (or
   * `lifetimeMs` passes: the stream then ends with OK). At most 2 open at once per client
   * address: the slot is held until the stream ends, and the third ends with RESOURCE_EXHAUSTED
   * before sending anything.
   */
  @GrpcMethod('Quotes', 'WatchPrices')
  @ConcurrencyLimit(2, { leaseMs: PRICE_FEED_LEASE_MS })
  watchPrices(@Payload('symbol', GrpcQuoteSymbolPipe) symbol: string): Observable<Quote> {
    return priceFeed(this.quotes.getQuote(symbol), this.timing);
  }
}
