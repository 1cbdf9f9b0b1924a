import type { ArgumentsHost, ExecutionContext } from '@nestjs/common';
import type { RateLimitExceededException } from '../exceptions/rate-limit-exceeded.exception.js';
import type { RateLimitUnavailableException } from '../exceptions/rate-limit-unavailable.exception.js';
import type { RateLimitHeaderMode } from '../headers/rate-limit-headers.js';
import type { RateLimitResult } from '../storage/rate-limit-decision.js';

/** The exceptions a context adapter turns into its transport's answer. */
export type RateLimitRefusal = RateLimitExceededException | RateLimitUnavailableException;

/**
 * What the guard needs to know about one kind of Nest execution context (`context.getType()`):
 * HTTP, GraphQL, WebSockets, RPC, or a transport of your own. Register your own with the
 * module's `contextAdapters` option.
 */
export interface RateLimitContextAdapter {
  /** The context type it serves, as `ExecutionContext.getType()` reports it. */
  readonly type: string;
  /** What key resolvers read: the HTTP request, the socket's handshake request, the RPC context. */
  request(context: ExecutionContext): unknown;
  /** The client's address as the transport saw it, before normalization; undefined if it has none. */
  clientAddress(context: ExecutionContext): string | undefined;
  /** Reports an admitted check, for transports that carry rate-limit headers. */
  admitted?(context: ExecutionContext, result: RateLimitResult, policy: string, mode: RateLimitHeaderMode): void;
  /**
   * What the guard throws for a refusal instead of the exception, where Nest may not run the
   * exception filter (GraphQL field resolvers without 'filters' in `fieldResolverEnhancers`).
   * Omitted, or returning the refusal: the exception, which the filter turns into `refuse()`.
   */
  rejection?(refusal: RateLimitRefusal, context: ExecutionContext): unknown;
  /** The transport's answer to a refusal; called by the module's exception filter. */
  refuse(refusal: RateLimitRefusal, host: ArgumentsHost): unknown;
  /**
   * Optional: whether the client of the request has gone already (a closed connection). On
   * routes that count outcomes or hold concurrency slots, the handler of a client gone before it
   * started is not run (a failure that did nothing). Omitted: never known to be gone.
   */
  clientGone?(context: ExecutionContext): boolean;
  /**
   * Calls `gone` once if the client of `context` goes away, until the returned function stops
   * watching. A transport that drops a client's pending messages with its connection (Nest's
   * WebSocket adapters do) never runs their handlers: this tells their `count` they did nothing.
   * Omitted: nothing is watched.
   */
  watchGone?(context: ExecutionContext, gone: () => void): () => void;
}
