import type { RateLimitModuleOptions } from '../rate-limit.options.js';
import { MemoryStorage } from './memory.storage.js';
import type { RateLimitStorage } from './rate-limit-storage.interface.js';
import { RedisStorage } from './redis.storage.js';

/** The storage named by the module options: an instance as given, or one built from its config. */
export function createStorage(storage: RateLimitModuleOptions['storage']): RateLimitStorage {
  if (storage === undefined) return new MemoryStorage();
  if ('check' in storage && typeof storage.check === 'function') return storage;
  if ('type' in storage && storage.type === 'memory') return new MemoryStorage({ maxKeys: storage.maxKeys });
  if ('type' in storage && storage.type === 'redis') {
    return new RedisStorage({ client: storage.client, url: storage.url, options: storage.options, blockCache: storage.blockCache });
  }
  throw new Error(
    `RateLimitModule: storage must be a RateLimitStorage, { type: 'memory' } or { type: 'redis' }, got ${JSON.stringify(storage)}`,
  );
}
