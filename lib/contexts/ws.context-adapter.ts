import type { ArgumentsHost } from '@nestjs/common';
import type { RateLimitContextAdapter, RateLimitRefusal } from './rate-limit-context-adapter.interface.js';
import { refusalPayload } from './refusal-payload.js';

/** A socket.io socket or a `ws` WebSocket, as far as the limiter reads them. */
interface WsClient {
  /** socket.io: the handshake's HTTP request. */
  request?: { socket?: { remoteAddress?: string } };
  /** socket.io: the address the client connected from. */
  handshake?: { address?: string };
  /** ws: the upgrade request's socket. */
  _socket?: { remoteAddress?: string };
  readyState?: unknown;
  /** socket.io: whether it has disconnected. */
  disconnected?: boolean;
  send?(data: string): void;
  emit?(event: string, payload: unknown): void;
  once?(event: string, listener: () => void): unknown;
}

const stopNothing = () => undefined;

/**
 * Per client, what to call when it goes: one listener on the socket, however many messages wait.
 * A message a later guard refuses is never settled otherwise, so each socket keeps its newest
 * {@link MAX_WATCHED} only: an older one stays counted, never refunded.
 */
const watched = new WeakMap<WsClient, Set<() => void>>();
const MAX_WATCHED = 64;

const clientOf = (host: ArgumentsHost) => host.getArgByIndex<WsClient>(0);

/**
 * WebSockets (socket.io and `ws`): each handled message is one check, keyed by default by the
 * address the client connected from. A denied message does not reach its handler; the client
 * gets Nest's `exception` event with `{ status: 'error', code: 'RATE_LIMITED', message,
 * retryAfter }`, and stays connected. Key resolvers read the socket.io handshake request, or
 * the `ws` socket itself (store the upgrade request on it as `request` to read its headers).
 */
export const wsContext: RateLimitContextAdapter = {
  type: 'ws',
  request: (context) => {
    const client = clientOf(context);
    return client.request ?? client;
  },
  clientAddress: (context) => {
    const client = clientOf(context);
    return client.handshake?.address ?? client._socket?.remoteAddress ?? client.request?.socket?.remoteAddress;
  },
  refuse(refusal: RateLimitRefusal, host: ArgumentsHost) {
    const client = clientOf(host);
    const payload = refusalPayload(refusal);
    // as Nest's own WebSocket exception filter answers: a native WebSocket gets a JSON message
    if (typeof client.readyState === 'number' && typeof client.send === 'function') {
      client.send(JSON.stringify({ event: 'exception', data: payload }));
    } else {
      client.emit?.('exception', payload);
    }
  },
  clientGone: (context) => {
    const client = clientOf(context);
    // ws: CLOSING (2) or CLOSED (3)
    return client.disconnected === true || (typeof client.readyState === 'number' && client.readyState >= 2);
  },
  watchGone: (context, gone) => {
    const client = clientOf(context);
    if (typeof client.once !== 'function') return stopNothing;
    let waiting = watched.get(client);
    if (waiting === undefined) {
      const all = (waiting = new Set());
      watched.set(client, all);
      client.once(client.handshake !== undefined ? 'disconnect' : 'close', () => {
        watched.delete(client);
        for (const call of all) call();
      });
    }
    waiting.add(gone);
    if (waiting.size > MAX_WATCHED) waiting.delete(waiting.values().next().value!);
    const set = waiting;
    return () => void set.delete(gone);
  },
};
