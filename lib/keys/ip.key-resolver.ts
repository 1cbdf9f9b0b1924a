import { Injectable, type ExecutionContext } from '@nestjs/common';
import { clientIp } from './client-ip.js';
import type { RateLimitKeyResolver } from './rate-limit-key-resolver.interface.js';

/** The default: the client IP (IPv6 by /64), as `ip:<address>`. */
@Injectable()
export class IpKeyResolver implements RateLimitKeyResolver {
  resolve(context: ExecutionContext): string {
    // getArgByIndex(0) is the HTTP request, without the wrapper switchToHttp() allocates
    return `ip:${clientIp(context.getArgByIndex(0))}`;
  }
}
