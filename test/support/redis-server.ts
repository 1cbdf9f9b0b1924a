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

  if (spawnSync('redis-server', ['--version']).error) {
    throw new Error(`The Redis tests need a Redis server and found none. ${HOW_TO_FIX}`);
  }
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'rl-redis-'));
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: 'ignore' },
  );
  const url = `redis://127.0.0.1:${port}`;
  await waitForPing(port, server);
  const admin = track(url)();
  return {
    url,
    port,
    client: track(url),
    flush: async () => void (await admin.flushdb()),
    stop: async () => {
      await closeClients();
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
  await ended;
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
