import { randomBytes } from 'node:crypto';
import {
  InternalServerErrorException,
  Logger,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
} from '@nestjs/common';
import { Observable } from 'rxjs';
import type { ConcurrencyDecision } from '../concurrency/concurrency-decision.js';
import type { ConcurrencyPlan } from '../concurrency/concurrency-plan.js';
import { CONCURRENCY_RETRY_AFTER_MS } from '../concurrency/concurrency-rule.js';
import { contextAdapterFor } from '../contexts/context-adapters.js';
import type { DeniedEvents } from '../contexts/denied-events.js';
import { isSubscription, type GqlContextType } from '../contexts/graphql.context-adapter.js';
import { grpcCallOf, isGrpcStream } from '../contexts/grpc-call.js';
import type { RateLimitRefusal } from '../contexts/rate-limit-context-adapter.interface.js';
import { RateLimitExceededException } from '../exceptions/rate-limit-exceeded.exception.js';
import { RateLimitUnavailableException } from '../exceptions/rate-limit-unavailable.exception.js';
import { withoutStack } from '../exceptions/without-stack.js';
import { ClientClosedRequestException } from '../outcomes/client-closed-request.exception.js';
import { followHandler } from '../outcomes/handler-end.js';
import { handlerStarts, rawResponseOf, settleOutcome } from '../outcomes/request-outcome.js';
import { followSubscription } from '../outcomes/subscription-end.js';
import { DEFAULT_LEASE_MS } from '../decorators/concurrency-limit.decorator.js';
import type { RateLimitConfig } from '../rate-limit.config.js';
import { CircuitBreaker } from '../resilience/circuit-breaker.js';
import { ProtectedStorage } from '../resilience/protected-storage.js';
import { RateLimitMetrics } from '../observability/rate-limit-metrics.js';
import { StorageUnavailableError } from '../resilience/storage-unavailable.error.js';
import { ThrottledLogger } from '../resilience/throttled-logger.js';
import type { RoutePlanner } from '../rules/route-planner.js';
import { MemoryStorage } from '../storage/memory.storage.js';
import type { RateLimitStorage } from '../storage/rate-limit-storage.interface.js';
import { isPromiseLike, then, type MaybePromise } from '../utils/maybe-async.js';

/**
 * Lease ids, unique across every app instance sharing a storage without asking it: a random tag
 * per process and a counter.
 */
const PROCESS_TAG = randomBytes(6).toString('base64url');
let leasesTaken = 0;
const nextLeaseId = () => `${PROCESS_TAG}:${(++leasesTaken).toString(36)}`;

/** A slot a request runs on: how long it may be held, and its release (none where no slot was taken). */
interface Slot {
  readonly leaseMs: number;
  readonly release?: () => void;
}

/** A slot taken before the handler's interceptors ran; `taken` once the interceptor runs on it. */
interface EarlySlot extends Slot {
  taken: boolean;
}

/** The metadata `@Sse()` sets (`SSE_METADATA` in @nestjs/common, whose constants file is not public API). */
export const SSE_METADATA = '__sse__';

/**
 * What the module binds to the handlers that need to see a request end (TransportEnhancers),
 * and to no others, so routes without them pay nothing. On every transport, the end of a
 * request is the end of its handler's work (see followHandler), not its client hanging up:
 * - `@ConcurrencyLimit`: takes a slot before the handler runs (interceptors run after every
 *   guard, so a request any guard refused holds none; an `@Sse()` route's is taken by its last
 *   guard, StreamSlotGuard) and gives it back exactly once, when the
 *   handler's work has ended (at the latest `leaseMs` after its client left, for a handler that
 *   never ends);
 * - it reports how the handler ended (`settleOutcome`), which `@RateLimit`'s `count` needs.
 * A client gone before its handler started gets no handler run: nothing was done, a failure.
 */
export class RateLimitInterceptor implements NestInterceptor {
  private readonly logger = new Logger(RateLimitInterceptor.name);
  private readonly outageLog = new ThrottledLogger(RateLimitInterceptor.name);
  private readonly storage: ProtectedStorage;
  /** The `memory` failure policy's stand-in, created on the first outage that needs it. */
  private fallback?: MemoryStorage;
  private readonly sseHandlers = new WeakMap<Function, boolean>();
  /** The slots `@Sse()` requests took while the guards ran, by request. */
  private readonly takenEarly = new WeakMap<object, EarlySlot>();

  constructor(
    private readonly config: RateLimitConfig,
    private readonly store: RateLimitStorage,
    private readonly planner: RoutePlanner,
    private readonly metrics: RateLimitMetrics = RateLimitMetrics.disabled(),
    private readonly deniedEvents?: DeniedEvents,
  ) {
    this.storage = new ProtectedStorage(store, config.storageTimeoutMs, new CircuitBreaker(config.circuitBreaker));
  }

  intercept(context: ExecutionContext, next: CallHandler): MaybePromise<Observable<unknown>> {
    if (context.getType() === 'http' && this.isSse(context.getHandler())) {
      const early = this.takenEarly.get(context.getArgByIndex<object>(0));
      if (early !== undefined) {
        early.taken = true;
        return this.run(context, next, early.leaseMs, early.release);
      }
    }
    const slot = this.slotFor(context);
    if (!isPromiseLike(slot)) return this.run(context, next, slot?.leaseMs, slot?.release);
    return slot.then((ready) => this.run(context, next, ready?.leaseMs, ready?.release));
  }

  /**
   * For an `@Sse()` route (StreamSlotGuard): takes the slot while the guards run, and throws the
   * refusal there. Nest commits a stream's headers a macrotask after it starts the interceptors,
   * so a slot decided in `intercept()` by a storage that answers later (Redis) would be refused
   * in a stream already answered 200. The interceptor then runs the handler on that slot. If it
   * never does (the client left before the stream started), the slot goes back with the response.
   */
  takeSlotEarly(context: ExecutionContext): MaybePromise<boolean> {
    return then(this.slotFor(context), (slot) => {
      if (slot === undefined) return true;
      // kept even without a release (an outage let it through): the interceptor must not ask again
      const early: EarlySlot = { leaseMs: slot.leaseMs, release: slot.release, taken: false };
      this.takenEarly.set(context.getArgByIndex<object>(0), early);
      if (early.release === undefined) return true;
      const response = rawResponseOf(context);
      const giveBack = () => early.taken || early.release!();
      // gone while the storage answered: its close has passed, and no stream will start
      if (response === undefined || response.closed) giveBack();
      else response.once('close', giveBack);
      return true;
    });
  }

  /** The slot the request runs on: undefined where no limit applies; throws the refusal. */
  private slotFor(context: ExecutionContext): MaybePromise<Slot | undefined> {
    const plan = this.planner.concurrencyFor(context);
    if (!isPromiseLike(plan)) return plan === undefined ? undefined : this.identify(plan, context);
    return plan.then((ready) => (ready === undefined ? undefined : this.identify(ready, context)));
  }

  private identify(plan: ConcurrencyPlan, context: ExecutionContext): MaybePromise<Slot> {
    let identity: MaybePromise<string>;
    try {
      identity = plan.identify(context);
    } catch (error) {
      return this.keyResolverFailed(plan, context, error);
    }
    if (!isPromiseLike(identity)) return this.acquire(plan, context, identity);
    return identity.then(
      (ready) => this.acquire(plan, context, ready),
      (error: unknown) => this.keyResolverFailed(plan, context, error),
    );
  }

  /** One storage call; if the storage cannot answer, the route's failure policy decides. */
  private acquire(plan: ConcurrencyPlan, context: ExecutionContext, identity: string): MaybePromise<Slot> {
    // a client gone while its key was resolved takes no slot
    if (this.clientGone(context)) return { leaseMs: plan.leaseMs };
    const key = plan.keyFor(identity);
    const leaseId = nextLeaseId();
    let answer: MaybePromise<ConcurrencyDecision>;
    try {
      answer = this.storage.acquire(key, plan.limit, plan.leaseMs, leaseId);
    } catch (error) {
      return this.outage(plan, context, key, leaseId, error);
    }
    if (!isPromiseLike(answer)) return this.decide(plan, context, answer, this.store, key, leaseId);
    return answer.then(
      (decision) => this.decide(plan, context, decision, this.store, key, leaseId),
      (error: unknown) => this.outage(plan, context, key, leaseId, error),
    );
  }

  private decide(plan: ConcurrencyPlan, context: ExecutionContext, decision: ConcurrencyDecision, holder: RateLimitStorage, key: string, leaseId: string): Slot {
    // concurrency limits count in ratelimit.requests under their own policy name
    if (this.metrics.enabled) this.metrics.request(decision.allowed ? 'allowed' : 'denied', plan.rule.name);
    if (!decision.allowed) throw this.refusal(context, this.exceeded(plan));
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      this.release(holder, key, leaseId);
    };
    return { leaseMs: plan.leaseMs, release };
  }

  /**
   * Runs the handler; `release` (if a slot was taken) is called once, when its work has ended,
   * and so is the outcome reported. Unless its client has gone already: then it does not run.
   */
  private run(context: ExecutionContext, next: CallHandler, boundMs = DEFAULT_LEASE_MS, release?: () => void): Observable<unknown> {
    if (this.clientGone(context)) {
      release?.();
      settleOutcome(context, true);
      throw new ClientClosedRequestException();
    }
    handlerStarts(context);
    const type = context.getType<GqlContextType>();
    const http = type === 'http';
    const response = http ? rawResponseOf(context) : undefined;
    const done = (failed: boolean) => {
      release?.();
      settleOutcome(context, failed);
    };
    if (type === 'graphql' && isSubscription(context)) return followSubscription(next.handle(), done);
    return followHandler(next.handle(), response, boundMs, done, http ? this.isSse(context.getHandler()) : this.isGrpcStream(context));
  }

  /** Whether the handler is an `@Sse()` route: its Observable is the stream, not a result on its way. */
  private isSse(handler: Function): boolean {
    let sse = this.sseHandlers.get(handler);
    if (sse === undefined) this.sseHandlers.set(handler, (sse = Reflect.getMetadata(SSE_METADATA, handler) === true));
    return sse;
  }

  /** A streaming gRPC call: its Observable is the stream, which Nest tears down when the call is cancelled. */
  private isGrpcStream(context: ExecutionContext): boolean {
    if (context.getType() !== 'rpc') return false;
    const call = grpcCallOf(context);
    return call !== undefined && isGrpcStream(call);
  }

  private clientGone(context: ExecutionContext): boolean {
    return contextAdapterFor(context.getType())?.clientGone?.(context) === true;
  }

  private release(holder: RateLimitStorage, key: string, leaseId: string): void {
    let done: void | Promise<void>;
    try {
      done = holder.release!(key, leaseId);
    } catch (error) {
      return this.releaseFailed(key, error);
    }
    if (isPromiseLike(done)) done.then(undefined, (error: unknown) => this.releaseFailed(key, error));
  }

  private releaseFailed(key: string, error: unknown): void {
    this.outageLog.warn(
      `Could not release a concurrency slot under key "${key}" (${(error as Error)?.message ?? String(error)}); ` +
        'it comes back when the storage is reachable again (RedisStorage), or when its lease expires',
    );
  }

  private outage(plan: ConcurrencyPlan, context: ExecutionContext, key: string, leaseId: string, error: unknown): Slot {
    if (!(error instanceof StorageUnavailableError)) throw this.refusal(context, error);
    // a storage that answers after the deadline may have granted the lease: give it back
    if (error.reason === 'timeout') this.release(this.store, key, leaseId);
    const policy = plan.onStorageError;
    this.outageLog.warn(`${error.message}; applying the '${policy}' failure policy to the concurrency limit of ${plan.route}`);
    if (policy === 'allow') return { leaseMs: plan.leaseMs };
    if (policy === 'deny') {
      throw this.refusal(context, withoutStack(() => new RateLimitUnavailableException(this.storage.breaker.retryInMs || 1_000, undefined, this.config.problemDetails)));
    }
    // memory: the limit holds per instance until the storage is back
    const fallback = (this.fallback ??= new MemoryStorage());
    return this.decide(plan, context, fallback.acquire(key, plan.limit, plan.leaseMs, leaseId), fallback, key, leaseId);
  }

  private exceeded(plan: ConcurrencyPlan): RateLimitExceededException {
    const details = {
      rule: plan.rule,
      limit: plan.limit,
      remaining: 0,
      retryAfterMs: CONCURRENCY_RETRY_AFTER_MS,
      resetMs: CONCURRENCY_RETRY_AFTER_MS,
      resetAt: Date.now() + CONCURRENCY_RETRY_AFTER_MS,
      cost: 1,
    };
    const problem = this.config.problemDetails ? { violatedPolicies: [plan.rule.name] } : undefined;
    return withoutStack(() => new RateLimitExceededException(details, this.config.errorMessage, plan.deniedHeaders, problem));
  }

  /**
   * What to throw instead of running the handler: a refusal as the context's adapter throws it
   * (the guard does the same). The request is reported as failed first: its handler never ran.
   */
  private refusal(context: ExecutionContext, error: unknown): unknown {
    settleOutcome(context, true);
    const type = context.getType();
    if (type === 'http' || !(error instanceof RateLimitExceededException || error instanceof RateLimitUnavailableException)) return error;
    if (type === 'rpc') this.deniedEvents?.refused(context, error);
    return contextAdapterFor(type)?.rejection?.(error as RateLimitRefusal, context) ?? error;
  }

  /** A key resolver failed: the request fails with a 500 and a logged error, never passes unlimited. */
  private keyResolverFailed(plan: ConcurrencyPlan, context: ExecutionContext, error: unknown): never {
    this.logger.error(`Concurrency limit key resolver failed on ${plan.route}; the request was refused.`, (error as Error)?.stack ?? String(error));
    throw this.refusal(context, new InternalServerErrorException());
  }
}
