import type { INestApplication, ModuleMetadata } from '@nestjs/common';
import { WsAdapter } from '@nestjs/platform-ws';
import { Test } from '@nestjs/testing';
import type { AddressInfo } from 'node:net';
import { io, type Socket } from 'socket.io-client';
import { WebSocket } from 'ws';

/** The two WebSocket platforms Nest ships: socket.io (its default) and `ws`. */
export type WsPlatform = 'socket.io' | 'ws';

/** For `describe.each(WS_PLATFORMS)('... on %s', (platform) => ...)`. */
export const WS_PLATFORMS: readonly WsPlatform[] = ['socket.io', 'ws'];

/** One message from the server: a socket.io event, or a `ws` JSON message `{ event, data }`. */
export interface WsMessage {
  readonly event: string;
  readonly data: unknown;
}

/**
 * A client of either platform that keeps every message the server sends, in order, so a test
 * sees all of them: an unexpected extra message (a second answer to a denial) shows up as the
 * answer to the next question.
 */
export interface WsTestClient {
  send(event: string, data?: unknown): void;
  /** The next message not yet taken; fails after `timeoutMs` without one. */
  next(timeoutMs?: number): Promise<WsMessage>;
  /** Sends, then takes the next message. */
  ask(event: string, data?: unknown): Promise<WsMessage>;
  /** Whether the connection is still open. */
  readonly open: boolean;
  close(): Promise<void>;
}

/**
 * An app of `metadata` on `platform`, listening on a free port of `host` (HTTP and the gateways
 * share it), with logging off.
 */
export async function createWsApp(
  platform: WsPlatform,
  metadata: ModuleMetadata,
  host = '127.0.0.1',
): Promise<{ app: INestApplication; port: number }> {
  const moduleRef = await Test.createTestingModule(metadata).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  if (platform === 'ws') app.useWebSocketAdapter(new WsAdapter(app));
  await app.listen(0, host);
  return { app, port: (app.getHttpServer().address() as AddressInfo).port };
}

/** Connects to `ws://host:port/` with `headers` on the handshake (socket.io) or upgrade (`ws`) request. */
export async function connectWs(
  platform: WsPlatform,
  port: number,
  options: { host?: string; headers?: Record<string, string> } = {},
): Promise<WsTestClient> {
  const { host = '127.0.0.1', headers } = options;
  const queue = new MessageQueue();
  if (platform === 'socket.io') {
    const socket: Socket = io(`http://${host}:${port}`, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      extraHeaders: headers,
    });
    socket.onAny((event: string, data: unknown) => queue.push({ event, data }));
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', reject);
    });
    return {
      send: (event, data) => void socket.emit(event, data),
      next: (timeoutMs) => queue.next(timeoutMs),
      ask: (event, data) => (socket.emit(event, data), queue.next()),
      get open() {
        return socket.connected;
      },
      close: async () => {
        if (!socket.connected) return;
        const gone = new Promise<void>((resolve) => socket.once('disconnect', () => resolve()));
        socket.disconnect();
        await gone;
      },
    };
  }
  const ws = new WebSocket(`ws://${host}:${port}/`, { headers });
  // Nest answers on `ws` with JSON messages; anything else would fail the test as an odd message
  ws.on('message', (raw) => queue.push(JSON.parse(String(raw)) as WsMessage));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const send = (event: string, data: unknown) => ws.send(JSON.stringify({ event, data }));
  return {
    send,
    next: (timeoutMs) => queue.next(timeoutMs),
    ask: (event, data) => (send(event, data), queue.next()),
    get open() {
      return ws.readyState === WebSocket.OPEN;
    },
    close: async () => {
      if (ws.readyState === WebSocket.CLOSED) return;
      const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
      ws.close();
      await closed;
    },
  };
}

class MessageQueue {
  private readonly messages: WsMessage[] = [];
  private readonly waiting: ((message: WsMessage) => void)[] = [];

  push(message: WsMessage): void {
    const waiter = this.waiting.shift();
    if (waiter) waiter(message);
    else this.messages.push(message);
  }

  next(timeoutMs = 2_000): Promise<WsMessage> {
    const message = this.messages.shift();
    if (message) return Promise.resolve(message);
    return new Promise((resolve, reject) => {
      const waiter = (m: WsMessage) => {
        clearTimeout(timer);
        resolve(m);
      };
      const timer = setTimeout(() => {
        this.waiting.splice(this.waiting.indexOf(waiter), 1);
        reject(new Error(`no message from the server within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.push(waiter);
    });
  }
}
