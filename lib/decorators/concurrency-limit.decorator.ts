import { SetMetadata } from '@nestjs/common';
import { MAX_HEADER_INTEGER } from '../headers/rate-limit-headers.js';
import type { RateLimitKey } from '../keys/rate-limit-key-resolver.interface.js';
import { assertStorageErrorPolicy } from '../rate-limit.config.js';
import type { StorageErrorPolicy } from '../rate-limit.options.js';
import { BUCKET_NAME } from './rate-limit.decorator.js';

export const CONCURRENCY_LIMIT_METADATA = 'rate-limit:concurrency';

export interface ConcurrencyLimitOptions {
  /** Who the request counts against, as `@RateLimit`'s `key`: the module's `key`, then the client IP. */
  key?: RateLimitKey;
  /** Routes with the same bucket share their slots. Default: one set of slots per controller method. */
  bucket?: string;
  /**
   * The longest a slot is held without being released, in ms. Default 60,000. An app instance
   * that dies releases nothing: its slots come back this long after they were taken. Set it
   * above the longest request of the route: a request that outlives it no longer counts.
   */
  leaseMs?: number;
  /** When the storage cannot answer: the route's `@RateLimit` policy, then the module's. */
  onStorageError?: StorageErrorPolicy;
}

export interface ConcurrencyLimitMetadata {
  readonly limit: number;
  readonly leaseMs: number;
  readonly options: ConcurrencyLimitOptions;
}

/** A slot's longest life by default; also how long a handler whose client left is waited for. */
export const DEFAULT_LEASE_MS = 60_000;
/** Node's longest timer, a bound people know; expiry times then stay exact 13-digit integers in Lua. */
const MAX_LEASE_MS = 2_147_483_647;

/**
 * At most `limit` requests of one client in flight at once on a controller or a handler (a
 * handler's decorator replaces its controller's), counted across every app instance that shares
 * the storage. A slot is taken after every guard admitted the request and given back when its
 * handler's work has ended (its result settled, and on HTTP its response is over), whether or
 * not the client is still there: a client that hangs up frees no slot while the work goes on.
 * Bad arguments throw here, when the class is defined, never at request time.
 */
export function ConcurrencyLimit(limit: number, options: ConcurrencyLimitOptions = {}) {
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_HEADER_INTEGER) {
    // the limit goes out in RateLimit-Policy, where integers have at most 15 digits
    throw new Error(`@ConcurrencyLimit needs a positive integer of at most 15 digits (requests in flight at once), got ${String(limit)}`);
  }
  if (options.bucket !== undefined && !BUCKET_NAME.test(options.bucket)) {
    throw new Error(`@ConcurrencyLimit bucket "${options.bucket}" must be 1-64 characters of A-Z a-z 0-9 _ . -`);
  }
  const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
  if (!Number.isSafeInteger(leaseMs) || leaseMs < 1 || leaseMs > MAX_LEASE_MS) {
    throw new Error(
      `@ConcurrencyLimit leaseMs must be a whole number of ms from 1 to ${MAX_LEASE_MS} (about 24.8 days), got ${String(options.leaseMs)}; ` +
        'make it longer than the slowest request of the route',
    );
  }
  if (options.onStorageError !== undefined) assertStorageErrorPolicy(options.onStorageError, '@ConcurrencyLimit');
  const metadata: ConcurrencyLimitMetadata = { limit, leaseMs, options };
  return SetMetadata(CONCURRENCY_LIMIT_METADATA, metadata);
}
