import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

/** A Redis for one test file: `REDIS_URL` if set, otherwise a private `redis-server` on a free port. */
export interface TestRedis {
  readonly url: string;
  readonly port: number;
  /** A new client; closed by `stop()`. */
  client(): Redis;
  flush(): Promise<void>;
  stop(): Promise<void>;
}

const HOW_TO_FIX =
  'Install Redis so that `redis-server` is on PATH (Debian: `apt-get install redis-server`), ' +
  'or set REDIS_URL to a Redis the tests may flush.';

export async function startRedis(): Promise<TestRedis> {
  const clients: Redis[] = [];
  const track = (url: string) => () => {
    const client = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 1 });
    clients.push(client);
    return client;
  };
  const closeClients = async () => void (await Promise.all(clients.map(closeClient)));

  if (process.env.REDIS_URL) {
    const url = process.env.REDIS_URL;
    const admin = new Redis(url, { maxRetriesPerRequest: 1 });
    await admin.ping().catch((error: Error) => {
      admin.disconnect();
      throw new Error(`REDIS_URL=${url} does not answer (${error.message}). ${HOW_TO_FIX}`);
    });
    clients.push(admin);
    return {
      url,
      port: Number(new URL(url).port || 6379),
      client: track(url),
      flush: async () => void (await admin.flushdb()),
      stop: closeClients,
    };
  }

  return startPrivateRedis();
}

/** A private redis-server the test may kill, restart, freeze and thaw. */
export interface ControllableRedis extends TestRedis {
  /** SIGKILL: connections drop at once. */
  kill(): Promise<void>;
  /** Starts it again on the same port, empty. */
  restart(): Promise<void>;
  /** SIGSTOP: connections stay open but nothing answers. */
  freeze(): void;
  /** SIGCONT. */
  thaw(): void;
}

/** Always a private `redis-server` on a free port, whatever REDIS_URL says. */
export async function startPrivateRedis(): Promise<ControllableRedis> {
  if (spawnSync('redis-server', ['--version']).error) {
    throw new Error(`The Redis tests need a Redis server and found none. ${HOW_TO_FIX}`);
  }
  const clients: Redis[] = [];
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'rl-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  const launch = async () => {
    const child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: 'ignore' },
    );
    await waitForPing(port, child);
    return child;
  };
  let server = await launch();
  const client = () => {
    const c = new Redis(url, { maxRetriesPerRequest: 1 });
    c.on('error', () => undefined); // outage tests kill the server under these clients
    clients.push(c);
    return c;
  };
  const admin = client();
  return {
    url,
    port,
    client,
    flush: async () => void (await admin.flushdb()),
    kill: async () => {
      const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
      server.kill('SIGKILL');
      await exited;
    },
    restart: async () => {
      server = await launch();
    },
    freeze: () => void server.kill('SIGSTOP'),
    thaw: () => void server.kill('SIGCONT'),
    stop: async () => {
      server.kill('SIGCONT');
      await Promise.all(clients.map(closeClient));
      await stopProcess(server);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Quits and waits until the socket is really closed, so Jest finds no open handle. */
export async function closeClient(client: Redis): Promise<void> {
  if (client.status === 'end') return;
  const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
  if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
  else client.disconnect();
  // a client whose server was killed may never say 'end'; do not let that hang a test run
  await Promise.race([ended, new Promise((resolve) => setTimeout(resolve, 500).unref())]);
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.unref();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

async function waitForPing(port: number, server: ChildProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) throw new Error(`redis-server exited with code ${server.exitCode}. ${HOW_TO_FIX}`);
    if (await answersPing(port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  server.kill('SIGKILL');
  throw new Error(`redis-server on port ${port} did not answer within 10 s. ${HOW_TO_FIX}`);
}

/** A raw PING: an ioredis client that failed to connect keeps the process alive for seconds. */
export function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

export function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}
