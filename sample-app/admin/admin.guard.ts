import { createHash, timingSafeEqual } from 'node:crypto';
import { Injectable, Logger, type CanActivate, type ExecutionContext } from '@nestjs/common';

/**
 * The admin key's default, when `ADMIN_API_KEY` is not set. **For the demo only**: it is in the
 * sources, so anyone can read it. Set `ADMIN_API_KEY` to a long random secret anywhere else.
 */
export const DEMO_ADMIN_API_KEY = 'admin-demo-key';

/** The header a script or the CLI sends the admin key in. */
export const ADMIN_KEY_HEADER = 'x-api-key';
/** The cookie a browser sends it in: navigating to a page, a browser sends no custom header. */
export const ADMIN_KEY_COOKIE = 'admin_key';

/** What the guard reads of a request: Express's and Fastify's both have `headers`. */
interface HeadersRequest {
  headers: Record<string, string | string[] | undefined>;
}

/**
 * Admits a request carrying the admin key, `ADMIN_API_KEY` (default {@link DEMO_ADMIN_API_KEY}),
 * in an `x-api-key` header or an `admin_key` cookie; anything else gets a 403. It guards the rate-limit
 * dashboard (`admin/rate-limits`), which shows who calls the API and how much.
 *
 * The comparison takes the same time whatever the candidate: both sides are hashed to SHA-256 first,
 * so `timingSafeEqual` always compares two 32-byte buffers, and neither a candidate's length nor its
 * common prefix with the key shows in the time an answer takes.
 */
@Injectable()
export class AdminGuard implements CanActivate {
  private readonly keyDigest: Buffer;

  constructor() {
    const configured = process.env.ADMIN_API_KEY;
    if (configured === undefined || configured === '') {
      new Logger(AdminGuard.name).warn(
        `ADMIN_API_KEY is not set: the rate-limit dashboard accepts the demo key "${DEMO_ADMIN_API_KEY}". Set ADMIN_API_KEY outside a demo.`,
      );
    }
    this.keyDigest = digest(configured || DEMO_ADMIN_API_KEY);
  }

  canActivate(context: ExecutionContext): boolean {
    if (context.getType() !== 'http') return false;
    const { headers } = context.switchToHttp().getRequest<HeadersRequest>();
    const header = headers[ADMIN_KEY_HEADER];
    const candidates = [Array.isArray(header) ? header[0] : header, cookieValue(headers.cookie, ADMIN_KEY_COOKIE)];
    // both are compared, whichever matches, so the time does not tell which one was tried
    let admitted = false;
    for (const candidate of candidates) if (candidate !== undefined && this.matches(candidate)) admitted = true;
    return admitted;
  }

  private matches(candidate: string): boolean {
    return timingSafeEqual(digest(candidate), this.keyDigest);
  }
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** The value of cookie `name` in a `Cookie` header, URI-decoded; undefined when absent or malformed. */
export function cookieValue(header: string | string[] | undefined, name: string): string | undefined {
  const text = Array.isArray(header) ? header.join('; ') : header;
  if (!text) return undefined;
  for (const pair of text.split(';')) {
    const at = pair.indexOf('=');
    if (at === -1 || pair.slice(0, at).trim() !== name) continue;
    let value = pair.slice(at + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    try {
      return decodeURIComponent(value);
    } catch {
      return undefined;
    }
  }
  return undefined;
}
