import { Logger } from '@nestjs/common';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { settleCheck, type RateLimitResult, type RawOutcome } from './rate-limit-decision.js';
import type { RateLimitCheck, RateLimitStorage } from './rate-limit-storage.interface.js';
import { BlockCache } from './block-cache.js';
import { ALGORITHMS, getAlgorithm } from '../algorithms/algorithm-registry.js';
import { buildCheckScript, REDIS_CHECK_LUA, redisCheckArguments } from './redis-check.lua.js';

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
  /**
   * Denies in-process, without a round trip, a key Redis denied until its retry-after ends.
   * On by default with room for 10,000 keys; `false` turns it off.
   */
  blockCache?: { maxKeys?: number } | false;
}

const COMMAND = 'rateLimitCheck';

/**
 * A limiter must answer fast or not at all: no queue of commands while disconnected (after the
 * first connection, see `queueUntilFirstReady`), no resending (a resent check would count twice),
 * one retry at most, and a reconnect attempt at least every 500 ms so recovery follows Redis's
 * return within about a second.
 */
const CREATED_CLIENT_DEFAULTS: RedisOptions = {
  enableAutoPipelining: true,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 1,
  retryStrategy: (attempt) => Math.min(attempt * 50, 500),
  // a Redis that hangs must not hold up shutdown: destroy the socket soon after asking to close
  disconnectTimeout: 200,
};
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
  /** The mixed-algorithm script, and one per algorithm (by code) for checks of a single algorithm. */
  private readonly runMixed: CheckCommand;
  private readonly runSingle: Record<string, CheckCommand> = {};
  private readonly blocks?: BlockCache;

  constructor(options: RedisStorageOptions = {}) {
    if (options.client) {
      this.client = options.client;
      this.ownsClient = false;
    } else {
      const settings: RedisOptions = { ...CREATED_CLIENT_DEFAULTS, ...options.options };
      this.client = options.url ? new Redis(options.url, settings) : new Redis(settings);
      this.ownsClient = true;
      if (options.options?.enableOfflineQueue === undefined) queueUntilFirstReady(this.client);
      reportErrorsOncePerOutage(this.client);
    }
    this.clock = options.clock;
    if (options.blockCache !== false) this.blocks = new BlockCache(options.blockCache?.maxKeys ?? 10_000);
    this.runMixed = this.define(COMMAND, REDIS_CHECK_LUA);
    for (const algorithm of Object.values(ALGORITHMS)) {
      this.runSingle[algorithm.code] = this.define(`${COMMAND}_${algorithm.code}`, buildCheckScript([algorithm]));
    }
  }

  check(checks: readonly RateLimitCheck[], cost: number): RateLimitResult | Promise<RateLimitResult> {
    const sentAt = this.clock ? this.clock() : Date.now();
    const blocked = this.blocks?.find(checks, cost, sentAt);
    if (blocked) return blocked;
    return this.commandFor(checks)(checks.length, ...redisCheckArguments(checks, cost, this.clock?.())).then((reply) => {
      const outcomes: RawOutcome[] = new Array(checks.length);
      for (let i = 0, at = 0; i < checks.length; i++, at += 4) {
        outcomes[i] = { allowed: reply[at] === 1, remaining: reply[at + 1], retryAfterMs: reply[at + 2], resetMs: reply[at + 3] };
      }
      const result = settleCheck(checks, sentAt, cost, outcomes);
      this.blocks?.record(checks, cost, sentAt, result);
      return result;
    });
  }

  private commandFor(checks: readonly RateLimitCheck[]): CheckCommand {
    const { algorithm } = checks[0].rule;
    for (let i = 1; i < checks.length; i++) if (checks[i].rule.algorithm !== algorithm) return this.runMixed;
    return this.runSingle[getAlgorithm(algorithm).code];
  }

  private define(name: string, lua: string): CheckCommand {
    this.client.defineCommand(name, { lua });
    return (this.client as unknown as Record<string, CheckCommand>)[name].bind(this.client);
  }

  /** Waits up to `timeoutMs` for a client the storage created to connect; never throws. */
  async init(timeoutMs = 2_000): Promise<void> {
    if (!this.ownsClient || this.client.status === 'ready') return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.client.off('ready', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.client.once('ready', done);
    });
  }

  /** Quits the client only if this storage created it. */
  async close(): Promise<void> {
    if (!this.ownsClient || this.client.status === 'end') return;
    if (this.client.status !== 'ready') return this.client.disconnect();
    // QUIT lets in-flight checks finish; a Redis that hangs gets half a second, then the socket is cut.
    const ended = new Promise<void>((resolve) => this.client.once('end', () => resolve()));
    const cutoff = setTimeout(() => this.client.disconnect(), 500);
    await this.client.quit().catch(() => this.client.disconnect());
    await ended;
    clearTimeout(cutoff);
    // QUIT leaves a sentinel client's failover subscription open; this releases it.
    this.client.disconnect();
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

/**
 * Checks sent while the client first connects wait (briefly: the guard's timeout bounds them);
 * from then on a disconnected client fails at once instead of queueing.
 */
function queueUntilFirstReady(client: Redis): void {
  client.once('ready', () => {
    client.options.enableOfflineQueue = false;
  });
}
