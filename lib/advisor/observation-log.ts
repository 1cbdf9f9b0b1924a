import type { ObservedCheck } from '../storage/rate-limit-storage.interface.js';

/** Observations kept before they are recorded together. */
export const OBSERVATION_LOG_CAPACITY = 512;

/** `flags` bits. */
export const REFUSED = 1;
export const SHADOW = 2;

/**
 * The advisor's observations of decided checks, written on the request path and recorded into
 * the policies' histograms and sketches later, many at a time (`LimitAdvisor.drain`).
 *
 * A request copies what the advisor needs from its check and decision while the CPU's caches
 * still hold them (the check's policy, key and hash; the attempts, time and cost) into arrays
 * written in order. Recording later from these alone, in a tight loop that keeps one histogram
 * and one sketch in cache, costs less than reaching into them on every request; and going back
 * to the checks and decisions instead would find them pushed out of the caches by then.
 *
 * A full log is drained at once, so it holds at most `capacity` observations, with references
 * to checks and keys the rule sets keep anyway. A report, a flush and a metrics read drain it
 * first, so nothing they show is behind.
 */
export class ObservationLog {
  /** Per observation: its check (read again only to learn its policy, once per check). */
  readonly checks: (ObservedCheck | undefined)[];
  /** Per observation: the policy's record, as the check held it (undefined until the advisor has seen it). */
  readonly policies: unknown[];
  /** Per observation: the check's key, for the heavy-hitters sketch. */
  readonly keys: (string | undefined)[];
  /** Per observation: time of the decision, attempts, cost and the key's hash. */
  readonly figures: Float64Array;
  readonly flags: Uint8Array;
  size = 0;

  constructor(readonly capacity = OBSERVATION_LOG_CAPACITY) {
    this.checks = new Array<ObservedCheck | undefined>(capacity).fill(undefined);
    this.policies = new Array<unknown>(capacity).fill(undefined);
    this.keys = new Array<string | undefined>(capacity).fill(undefined);
    this.figures = new Float64Array(capacity * 4);
    this.flags = new Uint8Array(capacity);
  }

  /** Adds one observation; true when the log is now full and must be drained. */
  add(check: ObservedCheck, now: number, attempts: number, cost: number, flags: number): boolean {
    const at = this.size++;
    this.checks[at] = check;
    this.policies[at] = check.advisorPolicy;
    this.keys[at] = check.key;
    const figures = this.figures;
    figures[at * 4] = now;
    figures[at * 4 + 1] = attempts;
    figures[at * 4 + 2] = cost;
    figures[at * 4 + 3] = check.sketchHash;
    this.flags[at] = flags;
    return this.size === this.capacity;
  }
}
