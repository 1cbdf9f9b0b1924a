import type { Type } from '@nestjs/common';
import { isPromiseLike, type MaybePromise } from '../utils/maybe-async.js';

interface RouteEntry<T> {
  readonly controller: Type;
  value: MaybePromise<T>;
  next: RouteEntry<T> | undefined;
}

/**
 * Something built once per route (a plan) and found again on every request with one lookup: by
 * handler, then among the few controllers that share it (a handler inherited by several controller
 * classes is one function). A promise is replaced by its value once ready, and forgotten if it
 * fails, so the next request builds again.
 */
export class RouteTable<T> {
  private readonly byHandler = new WeakMap<Function, RouteEntry<T>>();

  /** The route's value, built by `build(controller, handler)` the first time. */
  get(controller: Type, handler: Function, build: (controller: Type, handler: Function) => MaybePromise<T>): MaybePromise<T> {
    let entry = this.byHandler.get(handler);
    while (entry !== undefined && entry.controller !== controller) entry = entry.next;
    if (entry !== undefined) return entry.value;
    const value = build(controller, handler);
    const added: RouteEntry<T> = { controller, value, next: this.byHandler.get(handler) };
    this.byHandler.set(handler, added);
    if (isPromiseLike(value)) {
      value.then(
        (ready) => {
          added.value = ready;
        },
        () => this.forget(handler, added),
      );
    }
    return value;
  }

  private forget(handler: Function, gone: RouteEntry<T>): void {
    let entry = this.byHandler.get(handler);
    if (entry === gone) {
      if (gone.next === undefined) this.byHandler.delete(handler);
      else this.byHandler.set(handler, gone.next);
      return;
    }
    while (entry !== undefined && entry.next !== gone) entry = entry.next;
    if (entry !== undefined) entry.next = gone.next;
  }
}
