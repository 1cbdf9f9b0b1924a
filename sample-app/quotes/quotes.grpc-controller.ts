import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod, Payload } from '@nestjs/microservices';
import { map, takeUntil, timer, type Observable } from 'rxjs';
import { ConcurrencyLimit, RateLimit } from '../../lib/index.js';
import { QUOTES_BUCKET, quoteKey, quoteRate } from './quote-rate-limit.js';
import { GrpcQuoteSymbolPipe } from './quote-symbol.pipe.js';
import { QuotesService, type Quote } from './quotes.service.js';

/**
 * How long a `WatchPrices` slot is held at most (`leaseMs`): an app instance that dies gives its
 * slots back this long after they were taken. A stream that outlived it would no longer count,
 * so no stream does: each ends by itself before, at `lifetimeMs`.
 */
export const WATCH_PRICES_LEASE_MS = 60 * 60_000;

/** How often `WatchPrices` sends a price, and when it ends by itself. A provider: tests shorten both. */
export interface WatchPricesTiming {
  readonly tickMs: number;
  /** Below {@link WATCH_PRICES_LEASE_MS}. The client opens a new stream to go on watching. */
  readonly lifetimeMs: number;
}

export const WATCH_PRICES_TIMING = Symbol('WATCH_PRICES_TIMING');

export const watchPricesTimingProvider = {
  provide: WATCH_PRICES_TIMING,
  useValue: { tickMs: 1_000, lifetimeMs: 55 * 60_000 } satisfies WatchPricesTiming,
};

/**
 * `Quotes` of sample-app/proto/quotes.proto, served on GRPC_PORT beside the HTTP API (main.ts).
 * A call's default key is its caller's address (the call's peer), `ip:<address>`: the identity
 * HTTP's client IP gets, so one client's calls and requests count together.
 */
@Controller()
export class QuotesGrpcController {
  constructor(
    private readonly quotes: QuotesService,
    @Inject(WATCH_PRICES_TIMING) private readonly timing: WatchPricesTiming,
  ) {
    if (!(timing.lifetimeMs < WATCH_PRICES_LEASE_MS)) {
      throw new Error(`WatchPrices lifetimeMs (${timing.lifetimeMs}) must be below its lease, ${WATCH_PRICES_LEASE_MS} ms: a longer stream would stop counting`);
    }
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
  @ConcurrencyLimit(2, { leaseMs: WATCH_PRICES_LEASE_MS })
  watchPrices(@Payload('symbol', GrpcQuoteSymbolPipe) symbol: string): Observable<Quote> {
    const { tickMs, lifetimeMs } = this.timing;
    const quote = this.quotes.getQuote(symbol);
    return timer(0, tickMs).pipe(
      map((tick) => ({ ...quote, price: drift(quote.price, tick) })),
      takeUntil(timer(lifetimeMs)),
    );
  }
}

/** Fake market moves: within 1% of the quote's price, and the quote's own price at tick 0. */
function drift(price: number, tick: number): number {
  return Math.round(price * 100 * (1 + 0.01 * Math.sin(tick))) / 100;
}
