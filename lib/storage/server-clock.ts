/** How long a reading of the server's clock is trusted before newer ones replace it. */
const WINDOW_MS = 10_000;
/**
 * Before any reply, the server's clock is taken to be this process's wall clock, this far ahead
 * of the truth: a deadline set by it ends early (a call may fail that would have passed), never
 * late. Clocks kept by NTP agree within a few ms.
 */
const UNREAD_MARGIN_MS = 20;

/**
 * What this process knows of a Redis server's clock, to send deadlines in it: the offset from
 * `performance.now()` to the server's ms, as a lower bound. Each reply carries the server's time
 * when it ran; it ran before this process read the reply, so `server time - time read` is never
 * more than the true offset. The largest of these readings is the closest, and a deadline sent
 * as `local deadline + offset` passes on the server no later than it does here.
 *
 * Readings expire after about 10 s, so the bound follows a clock that drifts or is stepped.
 */
export class ServerClock {
  private best = -Infinity;
  private previousBest = -Infinity;
  private windowEndsAt = 0;

  /** A reply that the server ran at `serverMs` (its clock) arrived at `receivedAt` (`performance.now()`). */
  read(serverMs: number, receivedAt: number): void {
    if (!(serverMs > 0)) return;
    if (receivedAt >= this.windowEndsAt) {
      this.previousBest = receivedAt - this.windowEndsAt < WINDOW_MS ? this.best : -Infinity;
      this.best = -Infinity;
      this.windowEndsAt = receivedAt + WINDOW_MS;
    }
    const offset = serverMs - receivedAt;
    if (offset > this.best) this.best = offset;
  }

  /** Whether any reading is current. */
  get known(): boolean {
    return this.offset() !== undefined;
  }

  /** The lower bound of (server ms − `performance.now()`), or undefined without a current reading. */
  offset(): number | undefined {
    const best = Math.max(this.best, this.previousBest);
    if (best === -Infinity || performance.now() >= this.windowEndsAt + WINDOW_MS) return undefined;
    return best;
  }

  /** Forgets every reading: the next replies may come from another server (a failover). */
  forget(): void {
    this.best = this.previousBest = -Infinity;
    this.windowEndsAt = 0;
  }
}

/**
 * `local` (a `performance.now()` instant) in the server's clock, by `clock`, else by the lowest
 * offset `others` know, else by this process's wall clock moved early by a margin: whatever is
 * used, it is never later on the server than `local` is here, as far as can be known.
 */
export function toServerTime(local: number, clock: ServerClock | undefined, others: Iterable<ServerClock> = []): number {
  let offset = clock?.offset();
  if (offset === undefined) {
    for (const other of others) {
      const known = other.offset();
      if (known !== undefined && (offset === undefined || known < offset)) offset = known;
    }
  }
  offset ??= Date.now() - performance.now() - UNREAD_MARGIN_MS;
  return Math.floor(local + offset);
}
