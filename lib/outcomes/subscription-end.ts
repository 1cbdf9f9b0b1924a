import { Observable } from 'rxjs';

/**
 * A GraphQL subscription's resolver, as Nest hands it to an interceptor: an Observable of the
 * event stream (an `AsyncIterator`), which completes at once. The work is the stream, so the
 * iterator is passed on wrapped, and `done(failed)` is called once, when it ends: it runs out
 * (the server completed it), it throws, or its consumer stops it with `return()` (graphql-ws
 * does, when the client unsubscribes and when the socket closes).
 *
 * A resolver that fails, or produces something that is not a stream, ends its work at once.
 */
export function followSubscription(source: Observable<unknown>, done: (failed: boolean) => void): Observable<unknown> {
  return new Observable((subscriber) => {
    let ended = false;
    let produced = false;
    const end = (failed: boolean) => {
      if (ended) return;
      ended = true;
      done(failed);
    };
    const inner = source.subscribe({
      next: (value) => {
        produced = true;
        if (isAsyncIterator(value)) return subscriber.next(endingWith(value, end));
        end(false);
        subscriber.next(value);
      },
      error: (error: unknown) => {
        end(true);
        subscriber.error(error);
      },
      complete: () => {
        if (!produced) end(false);
        subscriber.complete();
      },
    });
    return () => inner.unsubscribe();
  });
}

function isAsyncIterator(value: unknown): value is AsyncIterator<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as AsyncIterator<unknown>).next === 'function';
}

/** `iterator`, calling `end` once it is over, however that happens. */
function endingWith(iterator: AsyncIterator<unknown>, end: (failed: boolean) => void): AsyncIterableIterator<unknown> {
  const settled = (result: IteratorResult<unknown>) => {
    if (result.done === true) end(false);
    return result;
  };
  const failed = (error: unknown) => {
    end(true);
    throw error;
  };
  const wrapped: AsyncIterableIterator<unknown> = {
    next: (...args: [] | [unknown]) => iterator.next(...args).then(settled, failed),
    return: (value?: unknown) => {
      // the consumer stopped reading: the stream's work is over, whatever its own return() does
      end(false);
      return iterator.return === undefined ? Promise.resolve({ done: true, value }) : iterator.return(value);
    },
    throw: (error?: unknown) => {
      end(true);
      return iterator.throw === undefined ? Promise.reject(error) : iterator.throw(error);
    },
    [Symbol.asyncIterator]: () => wrapped,
  };
  return wrapped;
}
