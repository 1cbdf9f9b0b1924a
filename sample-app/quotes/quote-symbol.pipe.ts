import { BadRequestException, Injectable, type PipeTransform } from '@nestjs/common';
import { RpcException } from '@nestjs/microservices';

const SYMBOL = /^[A-Za-z]{1,10}$/;
const RULE = 'symbol must be 1-10 letters, e.g. AAPL';

/** gRPC's INVALID_ARGUMENT (grpc/status.proto). */
const GRPC_INVALID_ARGUMENT = 3;

/** The symbol uppercased, or undefined if it is not 1-10 letters. */
function quoteSymbol(value: unknown): string | undefined {
  return typeof value === 'string' && SYMBOL.test(value) ? value.toUpperCase() : undefined;
}

/** A ticker symbol: 1-10 letters, uppercased. Anything else is a 400. */
@Injectable()
export class QuoteSymbolPipe implements PipeTransform<string, string> {
  transform(value: string): string {
    const symbol = quoteSymbol(value);
    if (symbol === undefined) throw new BadRequestException(RULE);
    return symbol;
  }
}

/**
 * The same rule for a gRPC request's symbol. Anything else ends the call with INVALID_ARGUMENT:
 * Nest's RPC exception filter answers an RpcException with its error, `{ code, message }`, which
 * grpc-js sends as the call's status; any other exception would be UNKNOWN, "Internal server error".
 */
@Injectable()
export class GrpcQuoteSymbolPipe implements PipeTransform<unknown, string> {
  transform(value: unknown): string {
    const symbol = quoteSymbol(value);
    if (symbol === undefined) throw new RpcException({ code: GRPC_INVALID_ARGUMENT, message: RULE });
    return symbol;
  }
}
