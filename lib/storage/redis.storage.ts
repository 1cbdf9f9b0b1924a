import { Logger } from '@nestjs/common';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { settleCheck, type RateLimitResult } from './rate-limit-decision.js';
import type { RateLimitCheck, RateLimitStorage } from './rate-limit-storage.interface.js';
import { REDIS_CHECK_LUA, redisCheckArguments } from './redis-check.lua.js';

export interface RedisStorageOptions {
  /** A client you own: used as given and never closed by the storage. */
  client?: Redis | Cluster;
  /** Connection URL, e.g. `redis://localhost:6379`, for a client the storage creates and closes. */
  url?: string;
  /** ioredis options for a client the storage creates (merged over `url`). */
  options?: RedisOptions;
  /**
   * Milliseconds since the epoch, for tests that control time. Without it the script reads the
   * Redis server's `TIME`, so the clocks of app servers never matter. Keys expire at absolute
   * times by the server's clock, so an injected clock must never run behind it.
   */
  clock?: () => number;
}

const COMMAND = 'rateLimitCheck';
const logger = new Logger('RedisStorage');

type CheckCommand = (numKeys: number, ...keysAndArgs: (string | number)[]) => Promise<number[]>;

/**
 * Shared state in Redis or Redis Cluster. Each check is one EVALSHA of one script (ioredis
 * reloads it on NOSCRIPT), with every key in the client's hash tag so Cluster sees one slot.
 */
export class RedisStorage implements RateLimitStorage {
  readonly client: Redis | Cluster;
  private readonly ownsClient: boolean;
  private readonly clock?: () => number;
  private readonly run: CheckCommand;

  constructor(options: RedisStorageOptions = {}) {
    if (options.client) {
      this.client = options.client;
      this.ownsClient = false;
    } else {
      // A limiter must answer fast: fail a command after one retry instead of ioredis's twenty.
      const settings: RedisOptions = { enableAutoPipelining: true, maxRetriesPerRequest: 1, ...options.options };
      this.client = options.url ? new Redis(options.url, settings) : new Redis(settings);
      this.ownsClient = true;
      reportErrorsOncePerOutage(this.client);
    }
    this.clock = options.clock;
    this.client.defineCommand(COMMAND, { lua: REDIS_CHECK_LUA });
    const command = (this.client as unknown as Record<string, CheckCommand>)[COMMAND];
    this.run = command.bind(this.client);
  }

  async check(checks: readonly RateLimitCheck[], cost: number): Promise<RateLimitResult> {
    const reply = await this.run(checks.length, ...redisCheckArguments(checks, cost, this.clock?.()));
    return settleCheck(
      checks.map((c) => c.rule),
      reply[0],
      cost,
      (i) => [reply[1 + i * 4] === 1, reply[2 + i * 4], reply[3 + i * 4], reply[4 + i * 4]],
    );
  }

  /** Quits the client only if this storage created it. */
  async close(): Promise<void> {
    if (!this.ownsClient || this.client.status === 'end') return;
    if (this.client.status !== 'ready') return this.client.disconnect();
    // QUIT lets in-flight checks finish; resolve once the socket is really gone.
    const ended = new Promise<void>((resolve) => this.client.once('end', () => resolve()));
    await this.client.quit().catch(() => this.client.disconnect());
    await ended;
  }
}

/** One warning per outage rather than one per reconnect attempt (and no "unhandled error event"). */
function reportErrorsOncePerOutage(client: Redis): void {
  let reported = false;
  client.on('error', (error: Error) => {
    if (reported) return;
    reported = true;
    logger.warn(`Redis connection error: ${error.message}. Rate-limit checks fail until it is back.`);
  });
  client.on('ready', () => {
    reported = false;
  });
}
