import { MemoryStorage } from './memory.storage.js';
import type { RateLimitStorage } from './rate-limit-storage.interface.js';
import { RedisStorage } from './redis.storage.js';

/** What metrics and health reports call a storage: `memory`, `redis`, `cluster`, or a storage of your own's class name. */
export function storageKindOf(storage: RateLimitStorage): string {
  if (storage instanceof MemoryStorage) return 'memory';
  if (storage instanceof RedisStorage) return storage.kind;
  return storage.constructor?.name || 'custom';
}
