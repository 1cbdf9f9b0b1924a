import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';

/**
 * Pieces shared by the Cluster and Sentinel harnesses: raw RESP commands for probes and admin
 * (an ioredis client that failed to connect keeps the process alive for seconds, so readiness
 * never goes through ioredis), free ports, and redis-server processes with their logs.
 */

/** A RESP2 reply: simple and bulk strings, integers, nil, arrays; a server error is an Error value. */
export type RawReply = string | number | null | Error | RawReply[];

export const INSTALL_REDIS =
  'Install Redis 7+ so that `redis-server` and `redis-cli` are on PATH (Debian: `apt-get install redis-server redis-tools`).';

/** Throws a message saying what to install when a binary is missing. */
export function requireRedisBinaries(purpose: string, binaries: readonly string[] = ['redis-server', 'redis-cli']): void {
  const missing = binaries.filter((binary) => spawnSync(binary, ['--version']).error);
  if (missing.length > 0) throw new Error(`${purpose} need ${missing.join(' and ')}, not found on PATH. ${INSTALL_REDIS}`);
}

/**
 * One command over a fresh raw socket. Rejects on connection errors and after `timeoutMs`;
 * a server error reply resolves as an Error value, so callers can tell "down" from "said no".
 */
export function rawCommand(port: number, args: readonly (string | number)[], timeoutMs = 2_000): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (error: Error | undefined, reply?: RawReply) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (error) reject(error);
      else resolve(reply!);
    };
    socket.setTimeout(timeoutMs, () => finish(new Error(`127.0.0.1:${port} did not answer ${args[0]} within ${timeoutMs} ms`)));
    socket.on('error', (error) => finish(error));
    socket.on('close', () => finish(new Error(`127.0.0.1:${port} closed the connection during ${args[0]}`)));
    socket.on('connect', () => {
      const parts = args.map(String);
      socket.write(`*${parts.length}\r\n${parts.map((p) => `$${Buffer.byteLength(p)}\r\n${p}\r\n`).join('')}`);
    });
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      try {
        const parsed = parse(buffer, 0);
        if (parsed) finish(undefined, parsed.value);
      } catch (error) {
        finish(error as Error);
      }
    });
  });
}

/** rawCommand for polling loops: undefined when the node is down, slow, or answers an error. */
export async function probe(port: number, args: readonly (string | number)[]): Promise<RawReply | undefined> {
  try {
    const reply = await rawCommand(port, args, 1_000);
    return reply instanceof Error ? undefined : reply;
  } catch {
    return undefined;
  }
}

/** rawCommand that throws on an error reply too, for admin commands that must succeed. */
export async function adminCommand(port: number, args: readonly (string | number)[]): Promise<RawReply> {
  const reply = await rawCommand(port, args, 5_000);
  if (reply instanceof Error) throw new Error(`${args.join(' ')} on port ${port} failed: ${reply.message}`);
  return reply;
}

/** `field:value` lines of INFO or CLUSTER INFO. */
export function infoFields(text: RawReply | undefined): Record<string, string> {
  const fields: Record<string, string> = {};
  if (typeof text !== 'string') return fields;
  for (const line of text.split('\r\n')) {
    const at = line.indexOf(':');
    if (at > 0) fields[line.slice(0, at)] = line.slice(at + 1);
  }
  return fields;
}

/**
 * Polls `condition` until it returns a truthy value, which it resolves to. On timeout, throws
 * with `describe()` of the last state, so a failing harness says what it was waiting for.
 */
export async function waitUntil<T>(
  what: string,
  condition: () => Promise<T | undefined | false>,
  timeoutMs: number,
  describe: () => string = () => '',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}. ${describe()}`.trim());
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** `count` distinct free ports: all listeners stay open until every port is picked. */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          server.on('error', reject);
          server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}

/** A redis-server process writing `redis.log` in its own directory. */
export interface RedisProcess {
  readonly port: number;
  readonly dir: string;
  process: ChildProcess;
}

/** Thrown when a node could not bind its port (another process took it after freePorts). */
export class PortTakenError extends Error {}

/**
 * Starts `redis-server ...args` in `dir` (its cwd, so relative files land there) and waits
 * until it answers PING on `port`.
 */
export async function startRedisProcess(port: number, dir: string, args: readonly string[], timeoutMs = 20_000): Promise<RedisProcess> {
  const child = spawn('redis-server', [...args], { cwd: dir, stdio: 'ignore' });
  const node = { port, dir, process: child };
  try {
    await waitUntil(
      `redis-server on port ${port}`,
      async () => {
        if (exited(child)) {
          const log = logTail(dir);
          if (/Address already in use/i.test(log)) throw new PortTakenError(`port ${port} was taken: ${log}`);
          throw new Error(`redis-server on port ${port} exited with code ${child.exitCode}. Log: ${log} ${INSTALL_REDIS}`);
        }
        return (await probe(port, ['PING'])) === 'PONG';
      },
      timeoutMs,
      () => `Log: ${logTail(dir)}`,
    );
  } catch (error) {
    await killProcess(child);
    throw error;
  }
  return node;
}

export function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Sends `signal` (SIGKILL by default) and resolves once the process is gone. */
export function killProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (exited(child)) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

/** The last lines of a node's log, for error messages. */
export function logTail(dir: string, lines = 8): string {
  const file = join(dir, 'redis.log');
  if (!existsSync(file)) return '(no redis.log)';
  return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join(' | ');
}

/** Parses one complete reply at `at`, or returns undefined if more bytes are needed. */
function parse(buffer: Buffer, at: number): { value: RawReply; next: number } | undefined {
  const end = buffer.indexOf('\r\n', at);
  if (end < 0) return undefined;
  const type = String.fromCharCode(buffer[at]);
  const line = buffer.toString('utf8', at + 1, end);
  switch (type) {
    case '+':
      return { value: line, next: end + 2 };
    case '-':
      return { value: new Error(line), next: end + 2 };
    case ':':
      return { value: Number(line), next: end + 2 };
    case '$': {
      const length = Number(line);
      if (length < 0) return { value: null, next: end + 2 };
      if (buffer.length < end + 2 + length + 2) return undefined;
      return { value: buffer.toString('utf8', end + 2, end + 2 + length), next: end + 2 + length + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { value: null, next: end + 2 };
      const items: RawReply[] = [];
      let next = end + 2;
      for (let i = 0; i < count; i++) {
        const item = parse(buffer, next);
        if (!item) return undefined;
        items.push(item.value);
        next = item.next;
      }
      return { value: items, next };
    }
    default:
      throw new Error(`unexpected RESP reply type "${type}"`);
  }
}
