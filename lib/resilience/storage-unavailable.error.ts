/** The storage could not answer in time (error, timeout, or an open circuit). */
export class StorageUnavailableError extends Error {
  constructor(
    readonly reason: 'error' | 'timeout' | 'circuit-open',
    override readonly cause?: unknown,
  ) {
    super(
      reason === 'circuit-open'
        ? 'rate-limit storage circuit is open after repeated failures'
        : reason === 'timeout'
          ? 'rate-limit storage did not answer in time'
          : `rate-limit storage failed: ${(cause as Error)?.message ?? String(cause)}`,
    );
    this.name = 'StorageUnavailableError';
  }
}
