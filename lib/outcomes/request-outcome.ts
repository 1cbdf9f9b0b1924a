import { ServerResponse } from 'node:http';
import type { ExecutionContext } from '@nestjs/common';

type OutcomeListener = (failed: boolean) => void;

/** Listeners of non-HTTP requests, by the arguments array Nest hands both guards and interceptors. */
const listeners = new WeakMap<object, OutcomeListener[]>();

/**
 * Calls `done` once, when the request of `context` has finished: `failed` is true for an HTTP
 * status of 400 or more, or a connection closed before the response was complete; elsewhere,
 * when the handler threw. HTTP reports it from the response itself; other transports through
 * {@link settleOutcome}, which the module's interceptor calls on the handlers that need it.
 */
export function whenFinished(context: ExecutionContext, done: OutcomeListener): void {
  if (context.getType() === 'http') {
    const response = context.getArgByIndex<ServerResponse | { raw: ServerResponse }>(1);
    const raw = response instanceof ServerResponse ? response : response.raw;
    const report = () => done(!raw.writableFinished || raw.statusCode >= 400);
    // 'close' comes last, whether the response finished or the client went away first; a client
    // gone before this was called (while a guard or the storage answered) closed it already.
    if (raw.closed) report();
    else raw.once('close', report);
    return;
  }
  const args = context.getArgs();
  const waiting = listeners.get(args);
  if (waiting === undefined) listeners.set(args, [done]);
  else waiting.push(done);
}

/** Reports how a non-HTTP request ended to what {@link whenFinished} registered for it; once. */
export function settleOutcome(context: ExecutionContext, failed: boolean): void {
  const args = context.getArgs();
  const waiting = listeners.get(args);
  if (waiting === undefined) return;
  listeners.delete(args);
  for (const done of waiting) done(failed);
}
