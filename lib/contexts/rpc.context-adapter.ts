import type { ArgumentsHost } from '@nestjs/common';
import { throwError } from 'rxjs';
import type { RateLimitContextAdapter, RateLimitRefusal } from './rate-limit-context-adapter.interface.js';
import { grpcCallOf, grpcPeerAddress, grpcRefusal } from './grpc-call.js';
import { refusalPayload } from './refusal-payload.js';

/** A TCP context's socket (Nest's JSON socket around a Node socket). */
interface RpcContextLike {
  getSocketRef?(): { netSocket?: { remoteAddress?: string }; socket?: { remoteAddress?: string } } | undefined;
}

/**
 * Microservices: each message is one check, `@MessagePattern` requests and `@EventPattern` events
 * alike. The default key is a TCP client's address; broker transports (Redis, NATS, Kafka...) carry
 * none, so their limited handlers need a `key` (MessageServers checks at start-up), or the message
 * fails (with Nest's "Internal server error" and a logged error naming the handler) rather than
 * pass unlimited.
 *
 * gRPC calls have the caller's address (the call's peer) and end a refusal with a gRPC status:
 * RESOURCE_EXHAUSTED, or UNAVAILABLE under `deny` (see grpc-call.ts).
 *
 * A denial fails the message with `{ status: 'error', code: 'RATE_LIMITED', message, retryAfter }`
 * (`STORAGE_UNAVAILABLE` under the `deny` failure policy), which is what `client.send(...)` rejects
 * with; a denied event is dropped, as a failed event handler is. Key resolvers read the
 * transport's context object (`TcpContext`, `NatsContext`...); the message is
 * `context.switchToRpc().getData()`.
 *
 * In a hybrid app connected without `{ inheritAppConfig: true }`, Nest gives the microservice no
 * global guard or filter: message handlers carry the module's own (see TransportEnhancers).
 */
export const rpcContext: RateLimitContextAdapter = {
  type: 'rpc',
  // gRPC: the call's Metadata
  request: (context) => context.getArgByIndex(1),
  clientAddress: (context) => {
    const call = grpcCallOf(context);
    if (call !== undefined) return grpcPeerAddress(call.getPeer());
    const socket = context.getArgByIndex<RpcContextLike | undefined>(1)?.getSocketRef?.();
    return socket?.netSocket?.remoteAddress ?? socket?.socket?.remoteAddress;
  },
  refuse(refusal: RateLimitRefusal, host: ArgumentsHost) {
    const call = grpcCallOf(host);
    const error = call === undefined ? refusalPayload(refusal) : grpcRefusal(refusal, call);
    return throwError(() => error);
  },
  // a gRPC call its client cancelled; other transports have no connection to watch
  clientGone: (context) => grpcCallOf(context)?.cancelled === true,
};
