import type { RateLimitStorage } from '../../lib/index.js';

/**
 * `storage`, whose concurrency answers (`acquire`) come `delayMs()` late, as a busy Redis's may:
 * later than Nest waits before a stream's headers, later than a client stays. 0: at once.
 */
export function answeringLate(storage: RateLimitStorage, delayMs: () => number): RateLimitStorage {
  return new Proxy(storage, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (property !== 'acquire') return value.bind(target);
      return async (...args: unknown[]) => {
        const ms = delayMs();
        if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
        return value.apply(target, args);
      };
    },
  });
}
