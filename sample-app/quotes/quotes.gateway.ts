import { MessageBody, SubscribeMessage, WebSocketGateway, WsException, type WsResponse } from '@nestjs/websockets';
import { RateLimit } from '../../lib/index.js';
import { QuotesService, type Quote } from './quotes.service.js';

const SYMBOL = /^[A-Za-z]{1,10}$/;

/**
 * socket.io on the HTTP port: emit `quote` with `{ symbol: 'ACME' }`, get a `quote` event with
 * the quote. 10 messages a minute per client address; the 11th gets Nest's `exception` event
 * `{ status: 'error', code: 'RATE_LIMITED', message, retryAfter }`, and the connection stays open.
 */
@WebSocketGateway()
export class QuotesGateway {
  constructor(private readonly quotes: QuotesService) {}

  @SubscribeMessage('quote')
  @RateLimit('10/minute')
  quote(@MessageBody() body: { symbol?: unknown } | undefined): WsResponse<Quote> {
    const symbol = body?.symbol;
    // as QuoteSymbolPipe on HTTP, but a WsException: Nest answers it with an `exception` event
    if (typeof symbol !== 'string' || !SYMBOL.test(symbol)) throw new WsException('symbol must be 1-10 letters, e.g. AAPL');
    return { event: 'quote', data: this.quotes.getQuote(symbol.toUpperCase()) };
  }
}
