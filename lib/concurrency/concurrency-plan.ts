import type { ExecutionContext } from '@nestjs/common';
import type { StorageErrorPolicy } from '../rate-limit.options.js';
import type { MaybePromise } from '../utils/maybe-async.js';
import type { ConcurrencyRule } from './concurrency-rule.js';

/** Everything the interceptor needs for one `@ConcurrencyLimit` route, built once and kept. */
export interface ConcurrencyPlan {
  /** `Controller.method`, for messages. */
  readonly route: string;
  readonly limit: number;
  readonly leaseMs: number;
  /** What a denial reports as its rule; its `name` is the policy name (the bucket). */
  readonly rule: ConcurrencyRule;
  /** The headers of a denial, in the module's header mode: the same for every denial of the route. */
  readonly deniedHeaders: readonly [string, string][];
  readonly onStorageError: StorageErrorPolicy;
  /** Who the request counts against: the key resolver's answer, or `ip:<address>`. */
  readonly identify: (context: ExecutionContext) => MaybePromise<string>;
  /** The storage key of an identity's slots: `<keyPrefix>:{<identity>}:<bucket>:cc`. */
  readonly keyFor: (identity: string) => string;
}
