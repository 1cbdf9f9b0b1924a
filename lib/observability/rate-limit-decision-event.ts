import type { RateLimitDecision } from '../storage/rate-limit-decision.js';
import type { RateLimitOutcome } from './rate-limit-metrics.js';

/** What the module option `onDecision` receives for each request the limiter decided. */
export interface RateLimitDecisionEvent {
  /** `Controller.method` of the handler. */
  readonly route: string;
  /** The context type: `http`, `graphql`, `ws`, `rpc`... */
  readonly type: string;
  /** The policy name, as in the `RateLimit` header: the most constraining rule's. */
  readonly policy: string;
  readonly outcome: RateLimitOutcome;
  /** Who the request counted against, as in storage keys: long or unusual identities are hashed. */
  readonly identity: string;
  /** The most constraining rule's decision; undefined when the storage could not decide. */
  readonly decision?: RateLimitDecision;
  /** Units the request used, or would have. */
  readonly cost: number;
}
