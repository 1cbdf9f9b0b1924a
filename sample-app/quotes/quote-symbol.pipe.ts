import { BadRequestException, Injectable, type PipeTransform } from '@nestjs/common';

const SYMBOL = /^[A-Za-z]{1,10}$/;

/** A ticker symbol: 1-10 letters, uppercased. Anything else is a 400. */
@Injectable()
export class QuoteSymbolPipe implements PipeTransform<string, string> {
  transform(value: string): string {
    if (!SYMBOL.test(value)) throw new BadRequestException('symbol must be 1-10 letters, e.g. AAPL');
    return value.toUpperCase();
  }
}
