import { ServerResponse } from 'node:http';
import type { ExecutionContext } from '@nestjs/common';
import { contextAdapterFor } from '../contexts/context-adapters.js';

type OutcomeListener = (failed: boolean) => void;

/**
 * Listeners by request: on HTTP the request object, elsewhere the arguments array Nest hands both
 * guards and interceptors (on HTTP each gets an array of its own, around the same request).
 */
const listeners = new WeakMap<object, OutcomeListener[]>();
/** Requests whose handler the module's interceptor has taken over. */
const started = new WeakSet<object>();
/** What stops watching the client of a request not yet settled (WebSockets). */
const watches = new WeakMap<object, () => void>();

const requestOf = (context: ExecutionContext): object => (context.getType() === 'http' ? context.getArgByIndex<object>(0) : context.getArgs());

/** The Node response of an HTTP context: Express's own, or under Fastify's reply. */
export function rawResponseOf(context: ExecutionContext): ServerResponse | undefined {
  const response = context.getArgByIndex<ServerResponse | { raw?: ServerResponse } | undefined>(1);
  return response instanceof ServerResponse ? response : response?.raw;
}

/**
 * Calls `done` once, when the work of the request of `context` has ended: `failed` is true for a
 * handler that threw, for an HTTP status of 400 or more, and for a request whose handler never
 * ran. The module's interceptor reports it ({@link settleOutcome}) when the handler ends, on
 * every transport: not when the client hangs up, which ends no work.
 *
 * An HTTP request that a later guard refuses never reaches the interceptor: its response, once
 * sent, reports it instead. (One refused after its client left reports nothing: it stays counted.)
 * A WebSocket message whose client leaves before its handler starts is dropped by Nest: the
 * client's going reports it, a failure.
 */
export function whenFinished(context: ExecutionContext, done: OutcomeListener): void {
  const request = requestOf(context);
  const waiting = listeners.get(request);
  if (waiting !== undefined) return void waiting.push(done);
  listeners.set(request, [done]);
  if (context.getType() !== 'http') {
    const adapter = contextAdapterFor(context.getType());
    if (adapter?.watchGone === undefined) return;
    // gone already (while a guard or the storage answered): its handler will not run
    if (adapter.clientGone?.(context) === true) return report(request, true);
    watches.set(request, adapter.watchGone(context, () => started.has(request) || report(request, true)));
    return;
  }
  const response = rawResponseOf(context);
  response?.once('finish', () => {
    if (!started.has(request)) report(request, response.statusCode >= 400);
  });
}

/** The interceptor runs the handler: from now on its end, not the response, reports the outcome. */
export function handlerStarts(context: ExecutionContext): void {
  started.add(requestOf(context));
}

/** Reports how a request ended to what {@link whenFinished} registered for it; once. */
export function settleOutcome(context: ExecutionContext, failed: boolean): void {
  report(requestOf(context), failed);
}

function report(request: object, failed: boolean): void {
  const waiting = listeners.get(request);
  if (waiting === undefined) return;
  listeners.delete(request);
  const watch = watches.get(request);
  if (watch !== undefined) {
    watches.delete(request);
    watch();
  }
  for (const done of waiting) done(failed);
}
