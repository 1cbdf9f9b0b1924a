// The contenders, and starting / stopping one app process per round.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './ports.js';

export interface Contender {
  /** Name in the table. */
  readonly name: string;
  /** Entry point in dist/apps. */
  readonly app: 'bare' | 'noop-guard' | 'redis-ping' | 'ours' | 'throttler' | 'rlf';
  readonly storage: 'none' | 'memory' | 'redis';
  /** Nest's HTTP adapter; Express unless said. */
  readonly platform?: 'express' | 'fastify';
  /** Ours with the limit advisor on (`advisor: true`): what it adds to the share (scenario P only). */
  readonly advisor?: boolean;
}

export const CONTENDERS: readonly Contender[] = [
  { name: 'bare', app: 'bare', storage: 'none' },
  // a reference, not a limiter: a global guard that admits every request (scenarios A and B)
  { name: 'bare+guard', app: 'noop-guard', storage: 'none' },
  // a reference, not a limiter: one awaited Redis PING per request (scenarios A and B)
  { name: 'bare+redis-ping', app: 'redis-ping', storage: 'redis' },
  { name: 'ours-memory', app: 'ours', storage: 'memory' },
  { name: 'ours-redis', app: 'ours', storage: 'redis' },
  // ours on Fastify: only in the profile scenario (P), whose measure does not compare with an Express bare
  { name: 'ours-memory-fastify', app: 'ours', storage: 'memory', platform: 'fastify' },
  // ours with the limit advisor on: only in the profile scenario (P), beside the same app without it
  { name: 'ours-memory-advisor', app: 'ours', storage: 'memory', advisor: true },
  { name: 'ours-redis-advisor', app: 'ours', storage: 'redis', advisor: true },
  { name: 'throttler-memory', app: 'throttler', storage: 'memory' },
  { name: 'throttler-redis', app: 'throttler', storage: 'redis' },
  { name: 'rlf-memory', app: 'rlf', storage: 'memory' },
  { name: 'rlf-redis', app: 'rlf', storage: 'redis' },
];

const LOADER = fileURLToPath(new URL('../single-nest.js', import.meta.url));
const running = new Set<ChildProcess>();

export interface RunningApp {
  readonly port: number;
  readonly pid: number;
  stop(): Promise<void>;
}

/**
 * Starts a contender in its own process on a free loopback port and resolves once it listens.
 * Its output goes to the runner's stderr, prefixed with its name.
 */
export async function startApp(
  contender: Contender,
  env: Record<string, string>,
  { timeoutMs = 20_000, nodeArgs = [] }: { timeoutMs?: number; nodeArgs?: readonly string[] } = {},
): Promise<RunningApp> {
  const port = await freePort();
  const child = spawn(process.execPath, [...nodeArgs, '--import', LOADER, fileURLToPath(new URL(`../apps/${contender.app}.js`, import.meta.url))], {
    env: { ...process.env, NODE_ENV: 'production', ...env, PORT: String(port), BENCH_STORAGE: contender.storage, BENCH_PLATFORM: contender.platform ?? 'express', BENCH_ADVISOR: contender.advisor ? '1' : '' },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  for (const stream of [child.stdout!, child.stderr!]) {
    stream.setEncoding('utf8');
    stream.on('data', (text: string) => {
      for (const line of text.split('\n')) if (line.trim()) process.stderr.write(`  [${contender.name}] ${line}\n`);
    });
  }

  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const forced = sleep(3_000).then(() => child.kill('SIGKILL'));
    await Promise.race([exited, forced]);
    await exited;
  };

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${contender.name} did not listen within ${timeoutMs} ms`)), timeoutMs);
      child.once('message', () => {
        clearTimeout(timer);
        resolve();
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${contender.name} exited before listening (code ${code}, signal ${signal})`));
      });
    });
  } catch (error) {
    await stop();
    throw error;
  }
  child.disconnect(); // the IPC channel only carried "ready"
  return { port, pid: child.pid!, stop };
}

/** For exit handlers: kills every app still running, synchronously. */
export function killAllApps(): void {
  for (const child of running) child.kill('SIGKILL');
}
