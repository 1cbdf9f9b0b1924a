import { Controller, Get, Param, type ExecutionContext } from '@nestjs/common';
import { RateLimit } from '../../lib/index.js';
import { requestUser } from '../users/request-user.js';
import { QuoteSymbolPipe } from './quote-symbol.pipe.js';
import { QuotesService, type Quote } from './quotes.service.js';

function paidUser(context: ExecutionContext) {
  const user = requestUser(context.switchToHttp().getRequest());
  return user?.plan === 'paid' ? user : undefined;
}

@Controller('quotes')
export class QuotesController {
  constructor(private readonly quotes: QuotesService) {}

  /**
   * Paid users get 1000/minute on their own budget, wherever they call from. Everyone else,
   * free users included, shares the 100/minute of their IP: a free token buys no extra quota.
   */
  @Get(':symbol')
  @RateLimit((context) => (paidUser(context) ? '1000/minute' : '100/minute'), {
    key: (context) => {
      const user = paidUser(context);
      return user ? `user:${user.id}` : undefined; // undefined: the client IP
    },
  })
  getQuote(@Param('symbol', QuoteSymbolPipe) symbol: string): Quote {
    return this.quotes.getQuote(symbol);
  }
}
