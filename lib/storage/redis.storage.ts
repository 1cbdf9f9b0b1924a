import { Logger } from '@nestjs/common';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { settleCheck, type RateLimitResult, type RawOutcome } from './rate-limit-decision.js';
import type { RateLimitCheck, RateLimitStorage, StorageDeadline } from './rate-limit-storage.interface.js';
import { BlockCache } from './block-cache.js';
import { clusterSlot, hashTagOf } from './cluster-slot.js';
import { LateOperationError } from './late-operation.error.js';
import { ServerClock, toServerTime } from './server-clock.js';
import { ALGORITHMS, getAlgorithm } from '../algorithms/algorithm-registry.js';
import { buildCheckScript, REDIS_CHECK_LUA } from './redis-check.lua.js';
import { RedisCheckBatch, type PendingCheck } from './redis-check-batch.js';
import { REDIS_CONTROL_LUA } from './redis-control.lua.js';
import { CheckFailedError } from './check-failed.error.js';
import { ThrottledLogger } from '../resilience/throttled-logger.js';
import type { ConcurrencyDecision } from '../concurrency/concurrency-decision.js';
import { CONCURRENCY_ACQUIRE_LUA, CONCURRENCY_RELEASE_LUA, CONCURRENCY_RESTORE_LUA } from '../concurrency/concurrency-leases.lua.js';

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
   * On by default with room for 10,000 keys; `false` turns it off. Each storage subscribes to
   * `channel` (default `rate-limit:block-cache`) on a connection of its own, where `reset` (and a
   * refund that reopens an exhausted budget) names the keys every instance must forget.
   */
  blockCache?: { maxKeys?: number; channel?: string } | false;
}

/** Where the storages sharing a Redis tell each other which cached denials to drop. */
const DEFAULT_CHANNEL = 'rate-limit:block-cache';

const COMMAND = 'rateLimitCheck';

/**
 * A limiter must answer fast or not at all: no queue of commands while disconnected (after the
 * first connection, see `queueUntilFirstReady`), no resending (a resent check would count twice),
 * one retry at most, and a reconnect attempt at least every 500 ms so recovery follows Redis's
 * return within about a second. No auto-pipelining: the storage batches its checks itself, and a
 * full batch must go out at once, so Redis works on it while this process reads the next reply.
 */
const CREATED_CLIENT_DEFAULTS: RedisOptions = {
  enableAutoPipelining: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 1,
  retryStrategy: (attempt) => Math.min(attempt * 50, 500),
  // a Redis that hangs must not hold up shutdown: destroy the socket soon after asking to close
  disconnectTimeout: 200,
};
const logger = new Logger('RedisStorage');

type CheckCommand = (numKeys: number, keys: string[], args: (string | number)[]) => Promise<(number | string)[]>;
/** The check script's reply (see redis-check.lua.ts), bulk strings as Buffers. */
type CheckReply = [records: Buffer, errors: Buffer[], healed: number[], now: Buffer, serverTime: number, attempts: Buffer];
type BatchCommand = (numKeys: number, keys: string[], args: (string | number)[]) => Promise<CheckReply>;
type ControlOperation = 'peek' | 'adjust' | 'refund' | 'reset' | 'block';

/** A lease this instance holds in Redis: what it puts back if Redis loses it. */
interface HeldLease {
  readonly key: string;
  /** When it expires, by the clock the lease script used (the server's, unless one was injected). */
  readonly expiresAt: number;
}

function observes(checks: readonly RateLimitCheck[]): boolean {
  for (let i = 0; i < checks.length; i++) if (checks[i].rule.observed === true) return true;
  return false;
}

/** Bytes of a rule's record in the check script's reply: allowed, then three doubles. */
const RECORD_BYTES = 25;
/** `allowed` of the records of a check that raised an error. */
const RECORD_FAILED = 2;

/**
 * Checks per script call at most. Smaller batches cost more per check; bigger ones keep fewer
 * batches in flight, so Redis and this process take turns instead of working at once, and hold
 * Redis (single-threaded) longer per call.
 */
const MAX_BATCH = 128;

/**
 * Shared state in Redis or Redis Cluster. Each check is one round trip: an EVALSHA of a script
 * (ioredis reloads it on NOSCRIPT) that decides the batch of checks it belongs to. Every key of
 * a check is in the client's hash tag, so Cluster sees one slot.
 */
export class RedisStorage implements RateLimitStorage {
  readonly client: Redis | Cluster;
  private readonly ownsClient: boolean;
  private readonly clock?: () => number;
  /** The mixed-algorithm script, and one per algorithm (by code) for checks of a single algorithm. */
  private readonly runMixed: BatchCommand;
  private readonly runSingle: Record<string, BatchCommand> = {};
  private readonly blocks?: BlockCache;
  /** Batches being filled, by hash tag (one batch, under '', outside a Cluster). */
  private readonly batches = new Map<string, RedisCheckBatch>();
  private flushScheduled = false;
  private readonly isCluster: boolean;
  private readonly healLog = new ThrottledLogger('RedisStorage');
  /** Every script's source, loaded on each master by `init`. */
  private readonly scripts: string[] = [];
  private readonly runControl: CheckCommand;
  /** The block cache's invalidations arrive here; undefined without a block cache. */
  private readonly subscriber?: Redis | Cluster;
  /** Settles once the subscriber first listens (or gives up): `init` waits for it. */
  private subscribed: Promise<void> = Promise.resolve();
  private readonly channel: string = '';
  /** What this process knows of each server's clock, by node address ('' outside a Cluster). */
  private readonly clocks = new Map<string, ServerClock>();
  /**
   * Leases this instance holds: their expiry by lease id, by key, oldest first (each acquire
   * checks that Redis still has the newest). And releases that failed and wait for the connection.
   */
  private readonly held = new Map<string, Map<string, number>>();
  private heldCount = 0;
  private readonly unreleased = new Map<string, HeldLease>();
  private restoreScheduled = false;
  /** Whether the restore is being tried again until it goes through (a Cluster that lost a node). */
  private followingFailover = false;
  private closed = false;
  /** Each observed check's attempts, as the reply gives them (see `settle`). */
  private readonly attempts: (number | undefined)[] = [];

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
    this.isCluster = this.client instanceof Cluster;
    this.clock = options.clock;
    if (options.blockCache !== false) {
      this.blocks = new BlockCache(options.blockCache?.maxKeys ?? 10_000);
      this.channel = options.blockCache?.channel ?? DEFAULT_CHANNEL;
      this.subscriber = this.listen(this.blocks);
    }
    this.runMixed = this.defineBatch(COMMAND, REDIS_CHECK_LUA);
    this.runControl = this.define('rateLimitControl', REDIS_CONTROL_LUA);
    for (const algorithm of Object.values(ALGORITHMS)) {
      this.runSingle[algorithm.code] = this.defineBatch(`${COMMAND}_${algorithm.code}`, buildCheckScript([algorithm]));
    }
    this.runAcquire = this.define('rateLimitAcquire', CONCURRENCY_ACQUIRE_LUA);
    this.runRelease = this.define('rateLimitRelease', CONCURRENCY_RELEASE_LUA);
    this.runRestore = this.define('rateLimitRestore', CONCURRENCY_RESTORE_LUA);
    this.watchReconnects();
  }

  check(checks: readonly RateLimitCheck[], cost: number, deadline?: StorageDeadline): RateLimitResult | Promise<RateLimitResult> {
    const sentAt = this.clock ? this.clock() : Date.now();
    const blocked = observes(checks) ? undefined : this.blocks?.find(checks, cost, sentAt);
    if (blocked) return blocked;
    return new Promise((resolve, reject) => this.enqueue({ checks, cost, sentAt, deadline, resolve, reject }));
  }

  peek(checks: readonly RateLimitCheck[], cost: number, deadline?: StorageDeadline): Promise<RateLimitResult> {
    return this.control('peek', checks, cost, deadline);
  }

  adjust(checks: readonly RateLimitCheck[], units: number, deadline?: StorageDeadline): Promise<RateLimitResult> {
    if (units < 0) this.blocks?.forget(checks.map((check) => check.key));
    return this.control('adjust', checks, units, deadline);
  }

  async refund(checks: readonly RateLimitCheck[], cost: number, chargedAt: number, deadline?: StorageDeadline): Promise<void> {
    this.blocks?.forget(checks.map((check) => check.key));
    await this.control('refund', checks, cost, deadline, chargedAt);
  }

  async reset(checks: readonly RateLimitCheck[], deadline?: StorageDeadline): Promise<void> {
    this.blocks?.forget(checks.map((check) => check.key));
    await this.control('reset', checks, 0, deadline);
  }

  async block(checks: readonly RateLimitCheck[], durationMs: number, deadline?: StorageDeadline): Promise<void> {
    this.blocks?.forget(checks.map((check) => check.key));
    await this.control('block', checks, durationMs, deadline);
  }

  /** One call of the control script (see redis-control.lua.ts); not batched, as it is rare. */
  private async control(
    operation: ControlOperation,
    checks: readonly RateLimitCheck[],
    amount: number,
    deadline: StorageDeadline | undefined,
    chargedAt: number | '' = '',
  ): Promise<RateLimitResult> {
    const now = this.clock ? this.clock() : Date.now();
    const node = this.nodeOf(hashTagOf(checks[0]?.key ?? ''));
    const args: (string | number)[] = [this.clock ? now : '', this.deadlineOn(node, deadline), operation, amount, this.channel, chargedAt];
    for (const { rule } of checks) args.push(getAlgorithm(rule.algorithm).code, rule.limit, rule.windowMs, rule.burst);
    const reply = await this.runControl(checks.length, checks.map((check) => check.key), args);
    this.readClock(node, reply[0] as number);
    if (reply[1] === 1) throw new LateOperationError(`a ${operation}`);
    const outcomes: RawOutcome[] = [];
    for (let at = 2; at < reply.length; at += 4) {
      outcomes.push({ allowed: reply[at] === 1, remaining: Number(reply[at + 1]), retryAfterMs: Number(reply[at + 2]), resetMs: Number(reply[at + 3]) });
    }
    return outcomes.length === 0 ? { allowed: true, now, decisions: [] } : settleCheck(checks, now, operation === 'peek' ? amount : 1, outcomes, false);
  }

  /**
   * The server's time after which an operation sent now must do nothing, as its script argument:
   * `timeoutMs` from now, on the clock of the node that runs it; '' without a deadline. Marks
   * the deadline sent, so the caller waits from here.
   */
  private deadlineOn(node: string | undefined, deadline: StorageDeadline | undefined, timeoutMs = deadline?.timeoutMs): number | '' {
    if (timeoutMs === undefined || timeoutMs === Infinity) return '';
    const sentAt = performance.now();
    if (deadline !== undefined) deadline.sentAt = sentAt;
    return toServerTime(sentAt + timeoutMs, node === undefined ? undefined : this.clocks.get(node), this.clocks.values());
  }

  /** A reply's reading of its server's clock (0: none was taken). */
  private readClock(node: string | undefined, serverTime: number): void {
    if (node === undefined || !(serverTime > 0)) return;
    let clock = this.clocks.get(node);
    if (clock === undefined) this.clocks.set(node, (clock = new ServerClock()));
    clock.read(serverTime, performance.now());
  }

  /** The node that serves a hash tag: its address on a Cluster (undefined while unknown), else ''. */
  private nodeOf(hashTag: string): string | undefined {
    if (!this.isCluster) return '';
    return (this.client as Cluster).slots[clusterSlot(hashTag)]?.[0];
  }

  /**
   * Subscribes, on a connection of its own, to the keys other instances reset. Denials cached
   * while no message could arrive may be stale, so each (re)subscription starts the cache over,
   * and while the subscription is down the cache trusts a denial for a second at most.
   */
  private listen(blocks: BlockCache): Redis | Cluster {
    // It subscribes on each 'ready' itself, its answer handled. ioredis's own resubscription is a
    // SUBSCRIBE nobody awaits: an unhandled rejection if the app closes before Redis answers it.
    const subscriber: Redis | Cluster = this.client instanceof Cluster ? this.client.duplicate() : this.client.duplicate({ autoResubscribe: false });
    subscriber.on('error', () => undefined); // the main connection reports outages
    let listening: () => void = () => undefined;
    this.subscribed = new Promise((resolve) => (listening = resolve));
    subscriber.on('ready', () => {
      subscriber.subscribe(this.channel).then(() => {
        blocks.resubscribed();
        listening();
      }, () => undefined);
    });
    for (const lost of ['close', 'reconnecting', 'end', '-subscriber']) subscriber.on(lost, () => blocks.unsubscribed());
    subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.channel) blocks.forget(message.split('\n'));
    });
    if (subscriber.status === 'wait') subscriber.connect().catch(() => undefined);
    return subscriber;
  }

  /** `cluster` on a Redis Cluster client, else `redis`: for metrics and health reports. */
  get kind(): 'redis' | 'cluster' {
    return this.isCluster ? 'cluster' : 'redis';
  }

  /** Denials the block cache holds now (0 without one). */
  get blockCacheSize(): number {
    return this.blocks?.size ?? 0;
  }

  /**
   * Whether resets and refunds made elsewhere reach this instance's block cache now: false while
   * its subscription is down (the cache then trusts a denial for a second at most); undefined
   * without a block cache.
   */
  get invalidationsReceived(): boolean | undefined {
    return this.blocks?.listening;
  }

  /** A denial from the block cache, without a round trip; undefined if it knows none. */
  cachedDenial(checks: readonly RateLimitCheck[], cost: number, unreachable?: boolean): RateLimitResult | undefined {
    // the limit advisor counts every attempt in Redis: while it answers, an observed check goes there
    if (unreachable !== true && observes(checks)) return undefined;
    return this.blocks?.find(checks, cost, this.clock ? this.clock() : Date.now(), unreachable);
  }

  /**
   * Checks made in one turn of the event loop go in one script call (one per hash tag on a
   * Cluster), sent when the turn ends, as ioredis's auto-pipelining does. A request still waits
   * one round trip; Redis and the client pay the per-call costs once for the whole batch.
   */
  private enqueue(check: PendingCheck): void {
    const group = this.isCluster ? hashTagOf(check.checks[0]?.key ?? '') : '';
    let batch = this.batches.get(group);
    const now = this.clock ? check.sentAt : undefined;
    if (batch !== undefined && batch.now !== now) {
      // an injected clock moved within one turn: the script takes one instant per batch
      this.send(batch);
      batch = undefined;
    }
    if (batch === undefined) {
      batch = new RedisCheckBatch(now, group);
      this.batches.set(group, batch);
    }
    batch.add(check);
    if (batch.pending.length >= MAX_BATCH) {
      this.batches.delete(group);
      this.send(batch);
    } else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    for (const batch of this.batches.values()) this.send(batch);
    this.batches.clear();
  };

  private send(batch: RedisCheckBatch): void {
    const code = batch.algorithmCode;
    const command = code === null ? this.runMixed : this.runSingle[code];
    const fail = (error: unknown) => {
      for (const check of batch.pending) check.reject(error);
    };
    const node = this.nodeOf(batch.group);
    const deadline = this.deadlineOn(node, undefined, batch.timeoutMs);
    batch.markSent(performance.now());
    // a denial is cached only if no invalidation of its key arrives between now and its answer
    const generation = this.blocks?.sentGeneration ?? 0;
    try {
      command(batch.keys.length, batch.keys, batch.arguments(deadline)).then((reply) => this.settle(batch, reply, node, generation), fail);
    } catch (error) {
      fail(error);
    }
  }

  private settle(batch: RedisCheckBatch, [records, errors, healed, decidedAt, serverTime, attempts]: CheckReply, node: string | undefined, generation: number): void {
    this.readClock(node, serverTime);
    if (records.length === 0) {
      const late = new LateOperationError('a batch of checks');
      for (const { reject } of batch.pending) reject(late);
      return;
    }
    const chargedAt = Number(String(decidedAt));
    const receivedAt = this.clock ? this.clock() : Date.now();
    let at = 0;
    let failed = 0;
    // the attempts of observed rules, 8 bytes each, in order; none for a check that failed
    let attemptAt = 0;
    for (const { checks, cost, sentAt, resolve, reject } of batch.pending) {
      if (records[at] === RECORD_FAILED) {
        reject(new CheckFailedError(String(errors[failed++]), checks.map((check) => check.key)));
        at += RECORD_BYTES * checks.length;
        continue;
      }
      try {
        const outcomes: RawOutcome[] = new Array(checks.length);
        for (let i = 0; i < checks.length; i++, at += RECORD_BYTES) {
          outcomes[i] = {
            allowed: records[at] === 1,
            remaining: records.readDoubleLE(at + 1),
            retryAfterMs: records.readDoubleLE(at + 9),
            resetMs: records.readDoubleLE(at + 17),
          };
        }
        let counted: (number | undefined)[] | undefined;
        if (batch.observed) {
          // scratch, read by settleCheck before the next check of the batch
          counted = this.attempts;
          for (let i = 0; i < checks.length; i++) {
            if (checks[i].rule.observed !== true) counted[i] = undefined;
            else {
              counted[i] = attempts.readDoubleLE(attemptAt);
              attemptAt += 8;
            }
          }
        }
        const result = settleCheck(checks, sentAt, cost, outcomes, true, chargedAt, counted);
        this.blocks?.record(checks, cost, sentAt, result, generation, receivedAt);
        resolve(result);
      } catch (error) {
        reject(error);
      }
    }
    for (const number of healed) {
      const key = batch.keys[number - 1];
      this.healLog.warn(`Replaced rate-limit state it could not read (another type, or truncated) under key "${key}"`);
    }
  }

  /** A check script: its reply's strings stay Buffers (ioredis's `...Buffer` variant). */
  private defineBatch(name: string, lua: string): BatchCommand {
    this.define(name, lua);
    return (this.client as unknown as Record<string, BatchCommand>)[`${name}Buffer`].bind(this.client);
  }

  private define(name: string, lua: string): CheckCommand {
    this.scripts.push(lua);
    this.client.defineCommand(name, { lua });
    return (this.client as unknown as Record<string, CheckCommand>)[name].bind(this.client);
  }

  /**
   * Waits up to `timeoutMs` for the client to connect (and the block cache to listen for
   * invalidations), then loads the scripts on every master, so the first checks neither time out
   * on a connection being made nor pay a NOSCRIPT round trip.
   * Never throws; a lazy client you passed is left to connect when first used.
   */
  async init(timeoutMs = 2_000): Promise<void> {
    if (this.client.status === 'wait' || this.client.status === 'end') return;
    if (this.client.status !== 'ready') {
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
    if (this.client.status !== 'ready') return;
    await Promise.race([this.subscribed, new Promise((resolve) => setTimeout(resolve, timeoutMs).unref())]);
    const nodes = this.client instanceof Cluster ? this.client.nodes('master') : [this.client];
    await Promise.all(nodes.flatMap((node) => this.scripts.map((lua) => node.script('LOAD', lua).catch(() => undefined))));
  }

  /** Quits the client only if this storage created it (and always its own subscriber). */
  async close(): Promise<void> {
    this.closed = true;
    this.subscriber?.disconnect();
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

  /** The concurrency-slot scripts (`@ConcurrencyLimit`), defined in the constructor so `init` loads them. */
  private readonly runAcquire: CheckCommand;
  private readonly runRelease: CheckCommand;
  private readonly runRestore: CheckCommand;

  /**
   * One round trip, not batched: see `concurrency-leases.lua.ts`. The lease is remembered until
   * released. The newest lease this instance holds under the key goes along: if Redis lost it
   * (a restart or failover this instance has not heard of yet, as when this very acquire is what
   * finds a promoted replica), a second call puts back every lease it holds there, then acquires.
   */
  async acquire(key: string, limit: number, leaseMs: number, leaseId: string, deadline?: StorageDeadline): Promise<ConcurrencyDecision> {
    const node = this.nodeOf(hashTagOf(key));
    // both calls under the deadline of the first: the store does nothing past it
    const args: (string | number)[] = [this.clock ? this.clock() : '', this.deadlineOn(node, deadline), limit, leaseMs, leaseId];
    let newest: [string, number] | undefined;
    for (const lease of this.held.get(key) ?? []) newest = lease;
    let reply = await this.runAcquire(1, [key], newest === undefined ? args : [...args, newest[0], newest[1]]);
    if (reply[0] === -2) {
      const mine: (string | number)[] = ['', ''];
      for (const [id, expiresAt] of this.held.get(key) ?? []) mine.push(id, expiresAt);
      reply = await this.runAcquire(1, [key], [...args, ...mine]);
    }
    this.readClock(node, reply[3] as number);
    if (reply[0] === -1) throw new LateOperationError('a concurrency acquire');
    if (reply[2] === 1) this.healLog.warn(`Replaced concurrency leases it could not read (another type) under key "${key}"`);
    if ((reply[5] as number) > 0) logger.warn(`Put back ${String(reply[5])} concurrency lease(s) Redis had lost under key "${key}"`);
    if (reply[0] === 1) this.hold(key, leaseId, Number(reply[4]));
    return { allowed: reply[0] === 1, limit, inFlight: reply[1] as number };
  }

  private hold(key: string, leaseId: string, expiresAt: number): void {
    let leases = this.held.get(key);
    if (leases === undefined) this.held.set(key, (leases = new Map()));
    if (!leases.has(leaseId)) this.heldCount++;
    leases.set(leaseId, expiresAt);
  }

  /** Forgets a lease; its expiry if it was held. */
  private unhold(key: string, leaseId: string): number | undefined {
    const leases = this.held.get(key);
    const expiresAt = leases?.get(leaseId);
    if (expiresAt === undefined) return undefined;
    leases!.delete(leaseId);
    if (leases!.size === 0) this.held.delete(key);
    this.heldCount--;
    return expiresAt;
  }

  /** A release that fails is tried again once the connection is back (it changes nothing twice). */
  async release(key: string, leaseId: string): Promise<void> {
    const lease = { key, expiresAt: this.unhold(key, leaseId) ?? Infinity };
    let removed: unknown;
    try {
      removed = await this.runRelease(1, [key], [leaseId]);
    } catch (error) {
      this.unreleased.set(leaseId, lease);
      throw error;
    }
    if (removed === -1) this.healLog.warn(`Deleted concurrency leases it could not read (another type) under key "${key}"`);
  }

  /** Leases held now by this instance (for tests and health reports). */
  get leasesHeld(): number {
    return this.heldCount;
  }

  /**
   * After a reconnection, or a Cluster whose slots moved: Redis may have lost the leases this
   * instance holds (a restart, a failover to a replica that had not received them). Each is put
   * back with its own expiry, and failed releases are tried again.
   */
  private watchReconnects(): void {
    const restore = () => {
      if (this.restoreScheduled) return;
      this.restoreScheduled = true;
      // after the listeners of the same event (ioredis's own), before the next turn's commands
      queueMicrotask(() => {
        this.restoreScheduled = false;
        void this.restoreLeases();
      });
    };
    if (this.client instanceof Cluster) {
      const cluster = this.client;
      const watch = (node: Redis) => node.on('ready', restore);
      cluster.on('+node', watch);
      cluster.on('refresh', restore);
      // a node lost, maybe a master: this client hears of the replica promoted in its place only
      // when it sends something to that master's slots, which an instance whose requests are all
      // in flight may not do for as long as they run; the restore itself goes there, until it goes through
      cluster.on('-node', () => this.followFailover());
      for (const node of cluster.nodes('all')) watch(node);
      return;
    }
    // another server may answer now (a Sentinel failover): what was known of its clock is not
    this.client.on('ready', () => {
      this.clocks.get('')?.forget();
      void this.restoreLeases();
    });
  }

  /** Tries the restore every 500 ms until every call of one goes through (or nothing is left to restore). */
  private followFailover(): void {
    if (this.followingFailover) return;
    this.followingFailover = true;
    const attempt = () => {
      const { status } = this.client;
      if (this.closed || status === 'end' || status === 'close' || status === 'disconnecting' || this.heldCount + this.unreleased.size === 0) {
        this.followingFailover = false;
        return;
      }
      void this.restoreLeases().then((done) => {
        if (done) this.followingFailover = false;
        else setTimeout(attempt, 500).unref();
      });
    };
    attempt();
  }

  /** Puts back the leases held and sends failed releases again; resolves whether every call went through. */
  private restoreLeases(): Promise<boolean> {
    if (this.heldCount === 0 && this.unreleased.size === 0) return Promise.resolve(true);
    const calls: Promise<boolean>[] = [];
    const now = this.clock ? this.clock() : toServerTime(performance.now(), this.clocks.get(''), this.clocks.values());
    for (const [key, leases] of this.held) {
      const pairs: string[] = [];
      for (const [id, expiresAt] of leases) {
        if (expiresAt <= now) this.unhold(key, id); // its request outlived it; Redis has dropped it anyway
        else pairs.push(id, String(expiresAt));
      }
      if (pairs.length === 0) continue;
      const restored = this.runRestore(1, [key], [this.clock ? now : '', ...pairs]).then(
        (missing) => {
          if ((missing as unknown as number) > 0) logger.warn(`Put back ${String(missing)} concurrency lease(s) Redis had lost under key "${key}"`);
          return true;
        },
        () => false, // the next reconnection tries again
      );
      calls.push(restored);
    }
    for (const [id, lease] of this.unreleased) {
      this.unreleased.delete(id);
      if (lease.expiresAt <= now) continue;
      calls.push(
        this.runRelease(1, [lease.key], [id]).then(
          () => true,
          () => {
            this.unreleased.set(id, lease);
            return false;
          },
        ),
      );
    }
    return Promise.all(calls).then((done) => done.every(Boolean));
  }

  /**
   * PING; on a Cluster, every master of the client's slot table, since each holds part of the
   * keys. No deadline of its own: RateLimitHealthIndicator bounds it by `storageTimeout`.
   */
  async ping(): Promise<void> {
    if (!(this.client instanceof Cluster)) {
      await this.client.ping();
      return;
    }
    // Not nodes('master'): ioredis drops a dead master from it at once, while its slots stay
    // unserved until a failover, so the masters left would all answer.
    const cluster = this.client;
    const masterKeys = new Set<string>();
    for (const owners of cluster.slots) if (owners?.[0] !== undefined) masterKeys.add(owners[0]);
    if (masterKeys.size === 0) throw new Error(`no Redis Cluster slot table yet (cluster ${cluster.status})`);
    const connected = new Map(cluster.nodes('master').map((node) => [`${node.options.host}:${node.options.port}`, node]));
    const unserved = [...masterKeys].filter((key) => !connected.has(key));
    if (unserved.length > 0) {
      // a replica may have been promoted since: without traffic to hit a MOVED, ioredis would not look
      cluster.refreshSlotsCache(() => undefined);
      throw new Error(`no connection to the Redis Cluster master of some slots: ${unserved.join(', ')}`);
    }
    await Promise.all([...masterKeys].map((key) => connected.get(key)!.ping()));
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
