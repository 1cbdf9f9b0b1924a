/** Steps per doubling between thresholds above the first 16: about 9% apart (more where whole counts round). */
const STEPS_PER_DOUBLING = 8;

/** How far above the limit the thresholds go. */
const RANGE = 16;

/** A figure the histogram knows exactly at a threshold, and between two by its neighbours. */
export interface Bounded {
  readonly low: number;
  readonly high: number;
}

/** What a candidate limit would have done to the window's traffic. */
export interface CandidateEstimate {
  readonly limit: number;
  /** Clients whose count passed `limit`: they would have been refused at least once. */
  readonly clientsDenied: Bounded;
  /** Requests that came past the `limit`-th of their client's window: they would have been refused. */
  readonly requestsDenied: Bounded;
  /** Whether `limit + 1` is a threshold, so both figures are exact (low = high). */
  readonly exact: boolean;
}

/**
 * The thresholds of a policy of `limit` requests per window: every count up to 16, then about
 * 9% apart, up to 16 × the limit, with the limit itself and the count just above it among them.
 */
export function usageThresholds(limit: number): Int32Array {
  const top = Math.max(RANGE, RANGE * limit);
  const values = new Set<number>();
  for (let t = 1; t <= Math.min(16, top); t++) values.add(t);
  for (let step = 4 * STEPS_PER_DOUBLING + 1; ; step++) {
    const t = Math.ceil(2 ** (step / STEPS_PER_DOUBLING));
    if (t > top) break;
    values.add(t);
  }
  if (limit <= top) values.add(limit);
  if (limit + 1 <= top) values.add(limit + 1);
  return Int32Array.from([...values].sort((a, b) => a - b));
}

/**
 * The usage of one policy in one window, from the count each request reaches in its client's
 * window (1 for a client's first request, 2 for its second...), whoever's instance saw it:
 * - `reached[k]`: clients whose count reached `thresholds[k]` (a request with exactly that count);
 * - `from[k]`: requests whose count lies in `[thresholds[k], thresholds[k + 1])`.
 * A request is a binary search over a few dozen thresholds and two increments; nothing is
 * allocated, and the memory is 20 bytes per threshold (about 100 of them for 1,000 a window), whatever the
 * number of clients.
 * Each request is recorded once, by the instance that saw it, so the histograms of several
 * instances add up exactly (`merge`).
 */
export class UsageHistogram {
  readonly reached: Float64Array;
  readonly from: Float64Array;

  constructor(readonly thresholds: Int32Array) {
    this.reached = new Float64Array(thresholds.length);
    this.from = new Float64Array(thresholds.length);
  }

  /** Bytes this histogram holds beyond its object headers. */
  get bytes(): number {
    return this.thresholds.byteLength + this.reached.byteLength + this.from.byteLength;
  }

  /**
   * A request of `cost` units whose client's count in the window is now `count`: the client
   * passed every threshold in `(count - cost, count]`, usually one at most.
   */
  record(count: number, cost = 1): void {
    let k = this.indexOf(count);
    if (k < 0) return;
    this.from[k]++;
    const before = count - cost;
    for (; k >= 0 && this.thresholds[k] > before; k--) this.reached[k]++;
  }

  /** Adds another instance's histogram of the same policy and window. */
  merge(other: UsageHistogram): void {
    if (other.thresholds.length !== this.thresholds.length) throw new Error('UsageHistogram.merge: the histograms have different thresholds');
    for (let k = 0; k < this.reached.length; k++) {
      this.reached[k] += other.reached[k];
      this.from[k] += other.from[k];
    }
  }

  /** Clients with at least one request. */
  get clients(): number {
    return this.reached[0] ?? 0;
  }

  /** Requests recorded. */
  get requests(): number {
    let sum = 0;
    for (let k = 0; k < this.from.length; k++) sum += this.from[k];
    return sum;
  }

  /**
   * What `limit` would have refused: clients and requests past it. Exact where `limit + 1` is a
   * threshold (the current limit always is); elsewhere bounded by the thresholds around it, since
   * both figures only fall as the limit rises.
   */
  estimate(limit: number): CandidateEstimate {
    const above = limit + 1;
    const k = this.indexOf(above);
    const exact = k >= 0 && this.thresholds[k] === above;
    if (exact) {
      const clients = this.reached[k];
      const requests = this.requestsFrom(k);
      return { limit, exact, clientsDenied: { low: clients, high: clients }, requestsDenied: { low: requests, high: requests } };
    }
    // between threshold k (below `above`, or none) and k + 1 (above it, or none)
    const high = k < 0 ? this.clients : this.reached[k];
    const low = k + 1 < this.reached.length ? this.reached[k + 1] : 0;
    const requestsHigh = k < 0 ? this.requests : this.requestsFrom(k);
    const requestsLow = k + 1 < this.from.length ? this.requestsFrom(k + 1) : 0;
    return { limit, exact, clientsDenied: { low, high }, requestsDenied: { low: requestsLow, high: requestsHigh } };
  }

  /** Requests whose count was at least `thresholds[k]`. */
  private requestsFrom(k: number): number {
    let sum = 0;
    for (let j = k; j < this.from.length; j++) sum += this.from[j];
    return sum;
  }

  /** The largest k with `thresholds[k] <= count`; -1 below the first. */
  private indexOf(count: number): number {
    const thresholds = this.thresholds;
    // every count up to 16 is a threshold (usageThresholds): most clients' counts, found at once
    if (count >= 1 && count <= 16 && count <= thresholds.length && thresholds[count - 1] === count) return count - 1;
    let low = 0;
    let high = thresholds.length - 1;
    if (count < thresholds[0]) return -1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (thresholds[middle] <= count) low = middle;
      else high = middle - 1;
    }
    return low;
  }
}
