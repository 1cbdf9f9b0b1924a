import type { ExecutionContext } from '@nestjs/common';
import { normalizeIp } from '../keys/client-ip.js';
import { graphqlContext } from './graphql.context-adapter.js';
import { httpContext } from './http.context-adapter.js';
import type { RateLimitContextAdapter } from './rate-limit-context-adapter.interface.js';
import { rpcContext } from './rpc.context-adapter.js';
import { wsContext } from './ws.context-adapter.js';

/** The adapters by context type: the built-in four, and any registered. */
const adapters = new Map<string, RateLimitContextAdapter>(
  [httpContext, graphqlContext, wsContext, rpcContext].map((adapter) => [adapter.type, adapter]),
);

/** Adds (or replaces) the adapter of a context type; `RateLimitModule`'s `contextAdapters` calls it. */
export function registerContextAdapter(adapter: RateLimitContextAdapter): void {
  if (typeof adapter?.type !== 'string' || typeof adapter.request !== 'function' || typeof adapter.clientAddress !== 'function' || typeof adapter.refuse !== 'function') {
    throw new Error('RateLimitModule: a context adapter needs a `type` string and `request`, `clientAddress` and `refuse` methods');
  }
  adapters.set(adapter.type, adapter);
}

export function contextAdapterFor(type: string): RateLimitContextAdapter | undefined {
  return type === 'http' ? httpContext : adapters.get(type);
}

/**
 * The request-like object of any context, for key resolvers that should work on every transport:
 * the HTTP request (for GraphQL, the one carrying the operation), the socket.io handshake request
 * or the `ws` socket, the RPC context. The first argument for a context with no adapter.
 */
export function rateLimitRequest<T = any>(context: ExecutionContext): T {
  const type = context.getType();
  if (type === 'http') return context.getArgByIndex(0);
  const adapter = adapters.get(type);
  return (adapter ? adapter.request(context) : context.getArgByIndex(0)) as T;
}

/** The client's address, normalized (IPv6 by /64), on any context that has one. */
export function rateLimitClientIp(context: ExecutionContext): string | undefined {
  return normalizeIp(contextAdapterFor(context.getType())?.clientAddress(context));
}
