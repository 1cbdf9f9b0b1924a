import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy in front of a Redis server, for races between the replies of two connections of
 * one client: its commands and its pub/sub messages.
 *
 * Each client connection gets a connection of its own to Redis. Client → server bytes are
 * forwarded at once, so Redis runs every command when it is sent. Server → client bytes are
 * forwarded at once too, except while the gate is held (`hold()`): the replies of ordinary
 * connections are then buffered until `release()`, so the test decides when the client reads an
 * answer Redis has already given. A connection that has sent a SUBSCRIBE (or PSUBSCRIBE,
 * SSUBSCRIBE) is a subscriber: its messages always pass through untouched, gate or not.
 */
export interface RedisGateProxy {
  /** The port the proxy listens on, on 127.0.0.1. */
  readonly port: number;
  /** `redisUrl` (its credentials and database kept) with the proxy's address in place of the server's. */
  url(redisUrl: string): string;
  /** Holds the replies of ordinary connections from now on. */
  hold(): void;
  /** Forwards every reply held, in order, and stops holding. */
  release(): void;
  /**
   * Resolves once reply bytes are held (Redis has answered something sent through a held
   * connection); at once if some already are. Rejects after `timeoutMs`, or if the gate is released first.
   */
  replyHeld(timeoutMs?: number): Promise<void>;
  /** Bytes held now. */
  readonly heldBytes: number;
  /** Client connections open now. */
  readonly connections: number;
  /** Client connections open now that have subscribed. */
  readonly subscribers: number;
  /** Stops listening and cuts every connection; resolves once the server is closed. */
  close(): Promise<void>;
}

/** A command name as the first bulk string of a RESP array, or an inline command. */
const SUBSCRIBE = /(?:^|\r\n)(?:\$1?\d\r\n)?[ps]?subscribe(?:\r\n| )/i;

interface Link {
  readonly client: Socket;
  readonly server: Socket;
  subscriber: boolean;
  held: Buffer[];
  /** The end of the previous chunk the client sent, in case a command name straddles two. */
  tail: string;
}

/** Starts a proxy to the Redis at `target` (a `redis://` URL, or host and port). */
export async function startRedisGateProxy(target: string | { host: string; port: number }): Promise<RedisGateProxy> {
  const { host, port: targetPort } = typeof target === 'string' ? addressOf(target) : target;
  const links = new Set<Link>();
  let holding = false;
  let waiters: { resolve: () => void; reject: (error: Error) => void }[] = [];
  let closed = false;

  const heldBytes = () => {
    let bytes = 0;
    for (const link of links) for (const chunk of link.held) bytes += chunk.length;
    return bytes;
  };
  const flush = (link: Link) => {
    const { held } = link;
    link.held = [];
    for (const chunk of held) if (!link.client.destroyed) link.client.write(chunk);
  };

  const proxy: Server = createServer((client) => {
    client.setNoDelay(true);
    const server = connect({ host, port: targetPort });
    server.setNoDelay(true);
    const link: Link = { client, server, subscriber: false, held: [], tail: '' };
    links.add(link);
    const cut = () => {
      if (!links.delete(link)) return;
      // what Redis said before it closed still reaches the client, then the close
      flush(link);
      client.end();
      server.destroy();
    };
    client.on('data', (chunk) => {
      if (!link.subscriber) {
        const text = link.tail + chunk.toString('latin1');
        if (SUBSCRIBE.test(text)) {
          link.subscriber = true;
          flush(link); // replies held before it subscribed go first
        }
        link.tail = text.slice(-16);
      }
      server.write(chunk);
    });
    server.on('data', (chunk) => {
      if (!holding || link.subscriber) {
        client.write(chunk);
        return;
      }
      link.held.push(chunk);
      const woken = waiters;
      waiters = [];
      for (const waiter of woken) waiter.resolve();
    });
    client.on('end', () => server.end());
    server.on('end', cut);
    server.on('close', cut);
    client.on('close', () => {
      links.delete(link);
      server.destroy();
    });
    // a reset connection is the client's or the server's business: the other side sees it closed
    client.on('error', () => undefined);
    server.on('error', () => client.destroy());
  });
  proxy.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    proxy.once('error', reject);
    proxy.listen(0, '127.0.0.1', () => {
      proxy.off('error', reject);
      resolve();
    });
  });
  const { port } = proxy.address() as { port: number };

  return {
    port,
    url(redisUrl: string) {
      const through = new URL(redisUrl);
      through.hostname = '127.0.0.1';
      through.port = String(port);
      return through.toString();
    },
    hold() {
      holding = true;
    },
    release() {
      holding = false;
      for (const link of links) flush(link);
      const woken = waiters;
      waiters = [];
      for (const waiter of woken) waiter.reject(new Error('the gate was released before any reply was held'));
    },
    replyHeld(timeoutMs = 5_000) {
      if (heldBytes() > 0) return Promise.resolve();
      if (!holding) return Promise.reject(new Error('replyHeld(): the gate is not held; call hold() first'));
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters = waiters.filter((waiter) => waiter !== entry);
          reject(new Error(`no reply was held within ${timeoutMs} ms: did the client send anything to Redis?`));
        }, timeoutMs);
        const entry = {
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
          reject: (error: Error) => {
            clearTimeout(timer);
            reject(error);
          },
        };
        waiters.push(entry);
      });
    },
    get heldBytes() {
      return heldBytes();
    },
    get connections() {
      return links.size;
    },
    get subscribers() {
      let count = 0;
      for (const link of links) if (link.subscriber) count++;
      return count;
    },
    async close() {
      if (closed) return;
      closed = true;
      holding = false;
      const woken = waiters;
      waiters = [];
      for (const waiter of woken) waiter.reject(new Error('the proxy was closed'));
      const stopped = new Promise<void>((resolve) => proxy.close(() => resolve()));
      for (const link of [...links]) {
        links.delete(link);
        link.client.destroy();
        link.server.destroy();
      }
      await stopped;
    },
  };
}

function addressOf(redisUrl: string): { host: string; port: number } {
  const url = new URL(redisUrl);
  return { host: url.hostname || '127.0.0.1', port: Number(url.port || 6379) };
}
