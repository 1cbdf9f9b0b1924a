/**
 * The storage answered, but could not decide this one check: an error confined to it (in Redis,
 * a script error on its keys). It wrote nothing. The failure policy answers the request; the
 * circuit breaker does not count it, since the storage itself is up.
 */
export class CheckFailedError extends Error {
  constructor(
    message: string,
    /** The storage keys of the check. */
    readonly keys: readonly string[],
  ) {
    super(`rate-limit check of ${keys.join(', ')} failed: ${message}`);
    this.name = 'CheckFailedError';
  }
}
