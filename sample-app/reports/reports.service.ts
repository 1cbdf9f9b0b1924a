import { Inject, Injectable } from '@nestjs/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuotesService } from '../quotes/quotes.service.js';

export interface Report {
  readonly symbol: string;
  readonly price: number;
  /** A made-up 52-week range around the price. */
  readonly low: number;
  readonly high: number;
  readonly currency: 'USD';
}

/**
 * What building a report waits for: about 500 ms of pretend number crunching. A provider, so a
 * test can hold reports open for exactly as long as it needs instead of sleeping.
 */
export const REPORT_DELAY = Symbol('REPORT_DELAY');
export type ReportDelay = (symbol: string) => Promise<void>;

export const reportDelayProvider = {
  provide: REPORT_DELAY,
  useValue: (() => sleep(500)) satisfies ReportDelay,
};

@Injectable()
export class ReportsService {
  constructor(
    private readonly quotes: QuotesService,
    @Inject(REPORT_DELAY) private readonly delay: ReportDelay,
  ) {}

  async build(symbol: string): Promise<Report> {
    await this.delay(symbol);
    const { price, currency } = this.quotes.getQuote(symbol);
    const cents = Math.round(price * 100);
    return { symbol, price, low: Math.round(cents * 0.8) / 100, high: Math.round(cents * 1.2) / 100, currency };
  }
}
