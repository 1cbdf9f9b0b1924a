import type { Observable } from 'rxjs';

/**
 * An Observable read as the AsyncIterator a GraphQL subscription's resolver returns. Values wait
 * in a queue until read; `return()` (graphql-ws calls it when the client unsubscribes or its
 * socket closes) unsubscribes, which stops the source.
 */
export function observableIterator<T>(source: Observable<T>): AsyncIterableIterator<T> {
  const queue: T[] = [];
  let reader: { resolve: (result: IteratorResult<T>) => void; reject: (error: unknown) => void } | undefined;
  let ended = false;
  let failure: { error: unknown } | undefined;

  const wake = () => {
    if (reader === undefined) return;
    const { resolve, reject } = reader;
    if (queue.length > 0) resolve({ value: queue.shift()!, done: false });
    else if (failure !== undefined) reject(failure.error);
    else if (ended) resolve({ value: undefined, done: true });
    else return;
    reader = undefined;
  };
  const subscription = source.subscribe({
    next: (value) => {
      queue.push(value);
      wake();
    },
    error: (error: unknown) => {
      failure = { error };
      wake();
    },
    complete: () => {
      ended = true;
      wake();
    },
  });

  const iterator: AsyncIterableIterator<T> = {
    next: () =>
      new Promise<IteratorResult<T>>((resolve, reject) => {
        reader = { resolve, reject };
        wake();
      }),
    return: () => {
      ended = true;
      queue.length = 0;
      subscription.unsubscribe();
      wake();
      return Promise.resolve({ value: undefined, done: true });
    },
    [Symbol.asyncIterator]: () => iterator,
  };
  return iterator;
}
