import { Injectable } from '@nestjs/common';

export interface Quote {
  readonly symbol: string;
  readonly price: number;
  readonly currency: 'USD';
}

/** Fake market data: the price is derived from the symbol, so the demo is reproducible. */
@Injectable()
export class QuotesService {
  getQuote(symbol: string): Quote {
    let hash = 0;
    for (const char of symbol) hash = (hash * 31 + char.charCodeAt(0)) % 1_000_003;
    const cents = 1_000 + (hash % 99_000); // between $10.00 and $999.99
    return { symbol, price: cents / 100, currency: 'USD' };
  }
}
