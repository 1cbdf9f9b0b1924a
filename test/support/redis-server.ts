import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis, type Command } from 'ioredis';

/**
 * A keyspace of its own for one test file: with `REDIS_URL`, an empty database of that server
 * claimed for this file alone; otherwise a private `redis-server` on a free port.
 *
 * The contract for a spec file: get it from `startRedis()` and `stop()` it in `afterAll`; reach
 * Redis only through `url` and `client()` (the URL carries the database; never build a URL from
 * host and `port`); clean with `flush()`; write keys of any name. It is a keyspace,
 * not a server: commands that reach beyond the database (FLUSHALL, SELECT, CONFIG SET/RESETSTAT,
 * INFO commandstats, SCRIPT FLUSH...) are refused by `client()`. A test that needs them, that
 * counts server-wide, or that kills or freezes Redis, uses `startPrivateRedis()`.
 */
export interface TestRedis {
  /** Connects to this file's database, e.g. `redis://127.0.0.1:6379/3`; give it to child processes too. */
  readonly url: string;
  /** The server's port, shared with other files under REDIS_URL: connect through `url`, not this. */
  readonly port: number;
  /** A new client on this file's database; closed by `stop()`. */
  client(): Redis;
  /** Empties this file's database, and only it. */
  flush(): Promise<void>;
  /** Closes the clients, empties the database and gives it back. */
  stop(): Promise<void>;
}

const HOW_TO_FIX =
  'Install Redis so that `redis-server` is on PATH (Debian: `apt-get install redis-server`), ' +
  'or set REDIS_URL to a Redis with empty databases the tests may claim and flush.';

export async function startRedis(): Promise<TestRedis> {
  if (process.env.REDIS_URL) return claimDatabase(process.env.REDIS_URL);
  const redis = await startPrivateRedis();
  // the same contract as on a shared server, so a test that breaks it fails here too, not only there
  const { url, port, flush, stop } = redis;
  return { url, port, client: () => keyspaceOnly(redis.client()), flush, stop };
}

/** The hash, in the database REDIS_URL names (0 by default), of the databases test files hold: db -> owner. */
const CLAIMS = 'rate-limit-tests:claims';

/**
 * Atomically takes the first database that is free: unclaimed and empty, or claimed by an owner
 * that is gone (ARGV[4..]: see abandonedClaims), whose leftovers it flushes.
 * Returns the database, or -1. The database REDIS_URL names holds the claims and is never taken.
 */
const CLAIM_LUA = `
local home, count, me = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local gone = {}
for i = 4, #ARGV do gone[ARGV[i]] = true end
for db = 0, count - 1 do
  if db ~= home then
    local owner = redis.call('HGET', KEYS[1], db)
    if owner == false or gone[owner] then
      local selected = redis.pcall('SELECT', db)
      if type(selected) == 'table' and selected.err then return -1 end
      local free = owner ~= false or redis.call('DBSIZE') == 0
      if free and owner ~= false then redis.call('FLUSHDB') end
      redis.call('SELECT', home)
      if free then
        redis.call('HSET', KEYS[1], db, me)
        return db
      end
    end
  end
end
return -1`;

/** FLUSHDB on the claimed database if the claim is still ours (ARGV[3] = 1: and give it back). */
const FLUSH_LUA = `
local home, db, release, me = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
if redis.call('HGET', KEYS[1], db) ~= me then return 0 end
redis.call('SELECT', db)
redis.call('FLUSHDB')
redis.call('SELECT', home)
if release then redis.call('HDEL', KEYS[1], db) end
return 1`;

async function claimDatabase(redisUrl: string): Promise<TestRedis> {
  const base = new URL(redisUrl);
  const shown = `${base.protocol}//${base.host}${base.pathname === '/' ? '' : base.pathname}`; // no credentials
  const home = Number(base.pathname.slice(1) || base.searchParams.get('db') || 0);
  // The owner's name is on its connection: CLIENT LIST shows whether it is still there.
  const me = `rate-limit-tests:${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const admin = new Redis(redisUrl, { maxRetriesPerRequest: 1, connectionName: me });
  admin.on('error', () => undefined); // reported through the commands that fail
  await admin.ping().catch((error: Error) => {
    admin.disconnect();
    throw new Error(`REDIS_URL=${shown} does not answer (${error.message}). ${HOW_TO_FIX}`);
  });

  let db = -1;
  try {
    const databases = Number((await admin.config('GET', 'databases').catch(() => []))[1] ?? 16);
    db = Number(await admin.eval(CLAIM_LUA, 1, CLAIMS, home, databases, me, ...(await abandonedClaims(admin))));
    if (db < 0) {
      const used = await admin.hgetall(CLAIMS);
      const info = await admin.info('keyspace');
      throw new Error(
        `REDIS_URL=${shown}: no database is free for this test file. Each file claims an empty database ` +
          `other than ${home} (of ${databases}) and flushes only that one. Held by tests: ` +
          `${JSON.stringify(used)}; not empty: ${info.replace(/\s+/g, ' ').trim()}. ` +
          'Empty a database, or unset REDIS_URL to run on private redis-servers.',
      );
    }
  } catch (error) {
    await closeClient(admin);
    throw error;
  }

  const dbUrl = new URL(redisUrl);
  dbUrl.pathname = `/${db}`;
  dbUrl.searchParams.delete('db');
  const url = dbUrl.toString();
  const clients: Redis[] = [];
  const flushOurs = async (release: boolean) => {
    const done = await admin.eval(FLUSH_LUA, 1, CLAIMS, home, db, release ? 1 : 0, me);
    if (done !== 1) throw new Error(`REDIS_URL=${shown}: the claim on database ${db} was lost; not flushing it`);
  };
  return {
    url,
    port: Number(dbUrl.port || 6379),
    client: () => {
      const client = keyspaceOnly(new Redis(url, { maxRetriesPerRequest: 1 }));
      clients.push(client);
      return client;
    },
    flush: () => flushOurs(false),
    stop: async () => {
      await Promise.all(clients.map(closeClient));
      try {
        // Someone still on the database (a test that outlived its file, a child process left
        // running) could write after it is given back, into a database nobody then knows as the
        // tests'. So it is flushed, and given back only when nobody is; otherwise it stays claimed
        // by this (closing) connection, and the next claim flushes it once they are all gone.
        const deadline = performance.now() + 1_000;
        let others = await connectionsOn(admin, db);
        while (others > 0 && performance.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 50));
          others = await connectionsOn(admin, db);
        }
        await flushOurs(others === 0);
        if (others > 0) {
          console.warn(
            `REDIS_URL=${shown}: ${others} connection(s) still on database ${db} after stop(); it stays claimed until they ` +
              'are gone, then the next test file to start flushes it. Close every storage and app before stop().',
          );
        }
      } finally {
        await closeClient(admin);
      }
    },
  };
}

/** The server's connections: name and database of each; undefined if CLIENT LIST is not allowed. */
async function connections(admin: Redis): Promise<{ name: string; db: number }[] | undefined> {
  const list = await admin.client('LIST').catch(() => undefined);
  if (typeof list !== 'string') return undefined;
  return list
    .split('\n')
    .filter((line) => line.includes(' db='))
    .map((line) => ({ name: / name=(\S*)/.exec(line)?.[1] ?? '', db: Number(/ db=(\d+)/.exec(line)?.[1]) }));
}

async function connectionsOn(admin: Redis, db: number): Promise<number> {
  return (await connections(admin))?.filter((c) => c.db === db).length ?? 0;
}

/**
 * Owners of claims that are abandoned: the owner's connection is gone (a run that crashed, or a
 * file that stopped while others still used its database) and no connection is on the database
 * any more. None if CLIENT LIST is not allowed.
 */
async function abandonedClaims(admin: Redis): Promise<string[]> {
  const claims = Object.entries(await admin.hgetall(CLAIMS));
  if (claims.length === 0) return [];
  const live = await connections(admin);
  if (!live) return [];
  return claims
    .filter(([db, owner]) => !live.some((c) => c.name === owner || c.db === Number(db)))
    .map(([, owner]) => owner);
}

/** Whether a command (lower-case name, lower-case arguments) reaches beyond one database. */
const first = (...subcommands: string[]) => (args: string[]) => subcommands.includes(args[0]);
const SERVER_WIDE: Record<string, (args: string[]) => boolean> = {
  flushall: () => true,
  select: () => true,
  swapdb: () => true,
  move: () => true,
  copy: (args) => args.slice(2).includes('db'),
  config: first('set', 'resetstat', 'rewrite'),
  info: (args) => args.some((section) => ['commandstats', 'errorstats', 'latencystats', 'stats', 'all', 'everything'].includes(section)),
  script: first('flush', 'kill'),
  function: first('flush', 'delete', 'load', 'restore', 'kill'),
  client: first('kill', 'pause', 'unpause'),
  debug: () => true,
  shutdown: () => true,
  replicaof: () => true,
  slaveof: () => true,
  failover: () => true,
  monitor: () => true,
  latency: first('reset'),
  slowlog: first('reset'),
};

/** Refuses the commands of SERVER_WIDE on `client`, pointing to startPrivateRedis(). */
function keyspaceOnly(client: Redis): Redis {
  const send = client.sendCommand.bind(client);
  client.sendCommand = (command: Command, ...rest: unknown[]) => {
    const args = command.args.map((arg) => String(arg).toLowerCase());
    const own = command.name === 'select' && args[0] === String(client.options.db ?? 0); // ioredis's handshake
    if (!own && SERVER_WIDE[command.name.toLowerCase()]?.(args)) {
      const name = [command.name, ...args.slice(0, 1)].join(' ').toUpperCase();
      const refusal = new Error(
        `${name} reaches beyond this test file's database, and startRedis() may share its server with ` +
          'other test files. Use startPrivateRedis() for a server of your own.',
      );
      if (rest[0] === undefined) {
        command.reject(refusal);
        return command.promise;
      }
      // in a pipeline or MULTI, which waits for a reply in its place: Redis answers with the refusal
      command.name = 'eval';
      command.args = ['return redis.error_reply(ARGV[1])', '0', refusal.message];
    }
    return (send as (...a: unknown[]) => unknown)(command, ...rest);
  };
  return client;
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

/**
 * `start(port)` on a port freePort found, and again on another while the port turns out taken:
 * freePort only knows it was free a moment ago, and another process on a busy machine may bind
 * it first. `start` must leave nothing behind when it fails.
 */
export async function onFreePort<T>(start: (port: number) => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      return await start(port);
    } catch (error) {
      if (attempt >= attempts || !/EADDRINUSE/.test(String((error as Error)?.message ?? error))) throw error;
    }
  }
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
