import type { RateLimitRefusal } from './rate-limit-context-adapter.interface.js';

/** How WebSockets, RPC (and GraphQL's `extensions`) describe a refusal. */
export interface RateLimitRefusalPayload {
  readonly status: 'error';
  readonly code: 'RATE_LIMITED' | 'STORAGE_UNAVAILABLE';
  readonly message: string;
  /** Whole seconds to wait; null when waiting cannot help (a cost above the limit's capacity). */
  readonly retryAfter: number | null;
}

export function refusalPayload(refusal: RateLimitRefusal): RateLimitRefusalPayload {
  return { status: 'error', code: refusal.code, message: refusal.message, retryAfter: refusal.retryAfter };
}
