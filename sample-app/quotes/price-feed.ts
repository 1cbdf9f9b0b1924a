import { map, takeUntil, timer, type Observable } from 'rxjs';
import type { Quote } from './quotes.service.js';

/**
 * How long a price-feed slot is held at most (`leaseMs` of gRPC's `WatchPrices` and GraphQL's
 * `priceChanged`): an app instance that dies gives its slots back this long after they were
 * taken. A feed that outlived it would no longer count, so no feed does: each ends by itself
 * before, at `lifetimeMs`.
 */
export const PRICE_FEED_LEASE_MS = 60 * 60_000;

/** How often a feed sends a price, and when it ends by itself. A provider: tests shorten both. */
export interface PriceFeedTiming {
  readonly tickMs: number;
  /** Below {@link PRICE_FEED_LEASE_MS}. The client opens a new feed to go on watching. */
  readonly lifetimeMs: number;
}

export const PRICE_FEED_TIMING = Symbol('PRICE_FEED_TIMING');

export const priceFeedTimingProvider = {
  provide: PRICE_FEED_TIMING,
  useValue: { tickMs: 1_000, lifetimeMs: 55 * 60_000 } satisfies PriceFeedTiming,
};

/** Refuses, at start-up, a lifetime that would outlive the feed's lease. */
export function checkPriceFeedTiming(timing: PriceFeedTiming): PriceFeedTiming {
  if (!(timing.lifetimeMs < PRICE_FEED_LEASE_MS)) {
    throw new Error(`price feed lifetimeMs (${timing.lifetimeMs}) must be below its lease, ${PRICE_FEED_LEASE_MS} ms: a longer feed would stop counting`);
  }
  return timing;
}

/** The quote at once, then a price every `tickMs`, until `lifetimeMs` has passed or the reader leaves. */
export function priceFeed(quote: Quote, { tickMs, lifetimeMs }: PriceFeedTiming): Observable<Quote> {
  return timer(0, tickMs).pipe(
    map((tick) => ({ ...quote, price: drift(quote.price, tick) })),
    takeUntil(timer(lifetimeMs)),
  );
}

/** Fake market moves: within 1% of the quote's price, and the quote's own price at tick 0. */
function drift(price: number, tick: number): number {
  return Math.round(price * 100 * (1 + 0.01 * Math.sin(tick))) / 100;
}
