import { Injectable, type ExecutionContext } from '@nestjs/common';
import { rateLimitClientIp } from '../contexts/context-adapters.js';
import { clientIp } from './client-ip.js';
import { PrefixedKeyResolver } from './prefixed-key-resolver.js';

/** The default: the client IP (IPv6 by /64), as `ip:<address>`, on every transport that has one. */
@Injectable()
export class IpKeyResolver extends PrefixedKeyResolver {
  readonly prefix = 'ip';

  value(context: ExecutionContext): string {
    // getArgByIndex(0) is the HTTP request, without the wrapper switchToHttp() allocates
    if (context.getType() === 'http') return clientIp(context.getArgByIndex(0));
    const address = rateLimitClientIp(context);
    if (address === undefined) {
      // never one shared budget for every client of a transport that carries no address
      throw new Error(
        `this ${context.getType()} transport gives no client address: give @RateLimit (or the module) a \`key\` that identifies the client`,
      );
    }
    return address;
  }
}
