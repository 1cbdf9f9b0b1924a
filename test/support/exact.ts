import type { RateLimitModuleOptions } from '../../lib/index.js';

/**
 * A storage timeout no round trip on a busy machine reaches. The 50 ms default fails fast in
 * production; a test that counts exactly must not depend on it holding while CI shares 2 cores
 * (a late answer is applied as `onStorageError`, and the count is off). Tests of timeouts and
 * outages set their own.
 */
export const EXACT_STORAGE_TIMEOUT = 2_000;

/** The options with EXACT_STORAGE_TIMEOUT unless they name a storageTimeout. */
export function exact(options: RateLimitModuleOptions): RateLimitModuleOptions {
  return { ...options, storageTimeout: options.storageTimeout ?? EXACT_STORAGE_TIMEOUT };
}
