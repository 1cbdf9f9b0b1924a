import { firstValueFrom, of, throwError } from 'rxjs';
import { followSubscription } from '../../lib/outcomes/subscription-end.js';

/** A source iterator that yields `values`, then ends; it records whether its return() ran. */
function source(values: number[]) {
  let index = 0;
  const iterator = {
    returned: false,
    next: async () => (index < values.length ? { value: values[index++], done: false } : { value: undefined, done: true }),
    return: async () => {
      iterator.returned = true;
      return { value: undefined, done: true };
    },
  };
  return iterator;
}

async function followed(value: unknown) {
  const ends: boolean[] = [];
  const wrapped = (await firstValueFrom(followSubscription(of(value), (failed) => ends.push(failed)))) as AsyncIterableIterator<number>;
  return { wrapped, ends };
}

describe('followSubscription', () => {
  it('ends once, a success, when the stream runs out: not when the resolver returns it', async () => {
    const { wrapped, ends } = await followed(source([1]));
    expect(ends).toEqual([]);
    expect(await wrapped.next()).toEqual({ value: 1, done: false });
    expect(ends).toEqual([]);
    expect(await wrapped.next()).toEqual({ value: undefined, done: true });
    await wrapped.next();
    await wrapped.return!();
    expect(ends).toEqual([false]);
  });

  it("ends when its reader stops it, and still calls the stream's own return()", async () => {
    const inner = source([1, 2]);
    const { wrapped, ends } = await followed(inner);
    await wrapped.next();
    await wrapped.return!();
    expect(ends).toEqual([false]);
    expect(inner.returned).toBe(true);
  });

  it('a stream that throws is a failure', async () => {
    const inner = { next: async () => Promise.reject(new Error('feed down')) };
    const { wrapped, ends } = await followed(inner);
    await expect(wrapped.next()).rejects.toThrow('feed down');
    expect(ends).toEqual([true]);
  });

  it('a resolver that throws is a failure; one that returns no stream ends at once', async () => {
    const ends: boolean[] = [];
    await expect(firstValueFrom(followSubscription(throwError(() => new Error('no')), (failed) => ends.push(failed)))).rejects.toThrow('no');
    expect((await followed({ errors: [] })).ends).toEqual([false]);
    expect(ends).toEqual([true]);
  });

  it('is its own async iterable, as graphql-js needs', async () => {
    const { wrapped } = await followed(source([1]));
    expect(wrapped[Symbol.asyncIterator]()).toBe(wrapped);
  });
});
