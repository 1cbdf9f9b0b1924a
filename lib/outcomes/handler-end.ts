import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { HttpException, StreamableFile } from '@nestjs/common';
import { Observable, type Subscription } from 'rxjs';

/**
 * The handler's result, as Nest hands it to an interceptor, followed to the end of the work it
 * stands for; `done(failed)` is called once, then.
 *
 * - The work ends when the result settles: it completes, or errors (a failure, unless the error
 *   is an HTTP exception below 400). A success stays a success if the client hung up meanwhile.
 * - On HTTP it also waits for the response to be over (sent, or its connection closed): a
 *   `StreamableFile`, an SSE stream or a response the handler pipes itself is work until then.
 *   A success with a status of 400 or more is a failure.
 * - Nest unsubscribes when the client goes away (a closed WebSocket; on HTTP, a handler that
 *   returned an Observable). What was already streaming ends with that: its work is torn down.
 *   But a result that has produced nothing yet is, as often as not, a promise that no
 *   unsubscription stops: it is followed to its first value or its end, and torn down then,
 *   or after `boundMs` if it never comes (a lease's length). Unless the result is the stream
 *   itself (`isStream`: an `@Sse()` route), whose work ends when it is torn down, events or not.
 */
export function followHandler(
  source: Observable<unknown>,
  response: ServerResponse | undefined,
  boundMs: number,
  done: (failed: boolean) => void,
  isStream = false,
): Observable<unknown> {
  return new Observable((subscriber) => {
    let listening = true;
    let produced = false;
    let settled = false;
    let failed = false;
    let ended = false;
    let responseOver = response === undefined || response.closed;
    let bound: ReturnType<typeof setTimeout> | undefined;
    let inner: Subscription | undefined;

    const end = () => {
      if (ended || !settled || !responseOver) return;
      ended = true;
      if (bound !== undefined) clearTimeout(bound);
      done(failed || (response !== undefined && response.statusCode >= 400));
    };
    const settle = (didFail: boolean) => {
      if (settled) return;
      settled = true;
      failed = didFail;
      end();
    };
    if (!responseOver) {
      response!.once('close', () => {
        responseOver = true;
        end();
      });
    }
    inner = source.subscribe({
      next: (value) => {
        produced = true;
        if (listening) return subscriber.next(value);
        // its first value, after the subscriber left: the handler is done; nobody reads this
        discard(value);
        settle(false);
        inner?.unsubscribe();
      },
      error: (error: unknown) => {
        settle(!(error instanceof HttpException && error.getStatus() < 400));
        if (listening) subscriber.error(error);
      },
      complete: () => {
        settle(false);
        if (listening) subscriber.complete();
      },
    });
    return () => {
      if (!listening) return;
      listening = false;
      if (settled) return;
      if (produced || isStream) {
        // a stream torn down: its work ends with it
        inner?.unsubscribe();
        return settle(false);
      }
      bound = setTimeout(() => {
        inner?.unsubscribe();
        settle(true);
      }, boundMs);
      bound.unref?.();
    };
  });
}

/** A value produced for a subscriber that has left: a stream in it would hold what it reads from. */
function discard(value: unknown): void {
  if (value instanceof StreamableFile) value.getStream().destroy();
  else if (value instanceof Readable) value.destroy();
}
