// The private redis-server of a bench run: own port, no persistence, stopped with the runner.
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { freePort } from './ports.js';

/** Calls of each command, from `INFO commandstats`. */
export type CommandCalls = Map<string, number>;

/** Commands that run a script: what a limiter's check costs in Redis. */
const SCRIPT_COMMANDS = new Set(['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro']);

export interface CommandDelta {
  /** Every command the apps sent over the interval (the runner's own INFO excluded). */
  total: number;
  /** EVAL / EVALSHA / FCALL and their _ro forms. */
  scripts: number;
  byCommand: Record<string, number>;
}

export class PrivateRedis {
  private constructor(
    readonly url: string,
    readonly version: string,
    private readonly process: ChildProcess,
    private readonly client: Redis,
  ) {}

  static async start(): Promise<PrivateRedis> {
    const port = await freePort();
    const server = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    const failed = new Promise<never>((_, reject) => {
      server.once('error', (error) => reject(new Error(`redis-server did not start: ${error.message}`)));
      server.once('exit', (code) => reject(new Error(`redis-server exited with code ${code}`)));
    });
    const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => {}); // connection attempts while the server starts; commands still reject
    const deadline = Date.now() + 10_000;
    const connect = async () => {
      for (;;) {
        try {
          await client.connect();
          return;
        } catch (error) {
          if (Date.now() > deadline) throw error;
          client.disconnect();
          await sleep(50);
        }
      }
    };
    await Promise.race([connect(), failed]);
    const info = await client.info('server');
    const version = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
    return new PrivateRedis(`redis://127.0.0.1:${port}`, version, server, client);
  }

  get pid(): number {
    return this.process.pid!;
  }

  async flushAll(): Promise<void> {
    await this.client.flushall();
  }

  async dbSize(): Promise<number> {
    return this.client.dbsize();
  }

  async commandCalls(): Promise<CommandCalls> {
    const calls: CommandCalls = new Map();
    for (const match of (await this.client.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      calls.set(match[1].toLowerCase(), Number(match[2]));
    }
    return calls;
  }

  /** Calls between two snapshots, minus the runner's own `INFO` that took the first one. */
  static delta(before: CommandCalls, after: CommandCalls): CommandDelta {
    const byCommand: Record<string, number> = {};
    let total = 0;
    let scripts = 0;
    for (const [command, calls] of after) {
      const n = calls - (before.get(command) ?? 0) - (command === 'info' ? 1 : 0);
      if (n <= 0) continue;
      byCommand[command] = n;
      total += n;
      if (SCRIPT_COMMANDS.has(command)) scripts += n;
    }
    return { total, scripts, byCommand };
  }

  /** Quits the client and the server; safe to call twice. */
  async stop(): Promise<void> {
    this.client.disconnect();
    if (this.process.exitCode === null && this.process.signalCode === null) {
      const exited = new Promise((resolve) => this.process.once('exit', resolve));
      this.process.kill('SIGTERM');
      await Promise.race([exited, sleep(3_000).then(() => this.process.kill('SIGKILL'))]);
    }
  }

  /** For exit handlers: synchronous. */
  kill(): void {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGKILL');
  }
}
