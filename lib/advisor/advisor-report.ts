import type { AlgorithmName } from '../algorithms/algorithm.interface.js';
import type { RateLimitMode } from '../rate-limit.options.js';

/**
 * What the limit advisor learnt, as `RateLimitService.advisorReport()`, the dashboard's
 * `report.json` and the CLI's `--json` give it. Shares are fractions from 0 to 1.
 * A "client" is one identity in one window of the policy: a client seen in three windows counts three times.
 */
export interface AdvisorReport {
  /** ISO time the report was made. */
  readonly generatedAt: string;
  /** How far back it looks, in seconds (each policy covers the time buckets that overlap it). */
  readonly periodSeconds: number;
  /** `shared`: every instance's traffic, summed in Redis; `instance`: this process's alone. */
  readonly scope: 'shared' | 'instance';
  readonly policies: readonly AdvisorPolicyReport[];
}

/** A share known exactly, or between two bounds (`low` ≤ true share ≤ `high`). */
export interface ShareRange {
  readonly low: number;
  readonly high: number;
}

/** What one candidate limit would have done over the period. */
export interface AdvisorCandidate {
  readonly limit: number;
  /** Share of clients it would have refused at least once (midpoint of the range when not exact). */
  readonly clientsDenied: number;
  /** Share of requests it would have refused. */
  readonly requestsDenied: number;
  /** Whether both shares are exact (`limit + 1` is one of the histogram's thresholds). */
  readonly exact: boolean;
  readonly clientsDeniedRange: ShareRange;
  readonly requestsDeniedRange: ShareRange;
}

/** The smallest limit that meets the target, and the figures it rests on. */
export interface AdvisorSuggestion {
  readonly limit: number;
  /** The most clients it may refuse, as a share (the `target` asked for). */
  readonly target: number;
  /** What it would refuse, as the histogram bounds it (the upper bound: it meets the target for sure). */
  readonly clientsDenied: number;
  readonly requestsDenied: number;
  /** Client-windows and requests the suggestion rests on. */
  readonly clients: number;
  readonly requests: number;
}

/** One identity among the heaviest, as the policy keys it (or its keyed hash under `redactIdentities`). */
export interface AdvisorTopIdentity {
  readonly identity: string;
  /** Requests counted for it over the sketch's period: at least its true count, at most `error` above. */
  readonly requests: number;
  readonly error: number;
}

/** One time bucket of the policy: requests seen, refused, and refused in shadow mode only. */
export interface AdvisorTimelinePoint {
  /** ISO start of the bucket. */
  readonly start: string;
  readonly requests: number;
  readonly denied: number;
  readonly shadowDenied: number;
}

/** How many client-windows reached `threshold` requests, and how many requests came at or past it. */
export interface AdvisorDistributionPoint {
  readonly threshold: number;
  readonly clients: number;
  readonly requests: number;
}

/** How the estimates relate to what the policy's algorithm would really do. */
export type AdvisorEstimateKind = 'exact' | 'lower-bound' | 'upper-bound' | 'approximate';

export interface AdvisorPolicyReport {
  /** The policy's name, as in the `RateLimit-Policy` header. */
  readonly name: string;
  /** The rate as written, e.g. `100/minute`. */
  readonly rate: string;
  readonly limit: number;
  readonly windowSeconds: number;
  readonly algorithm: AlgorithmName;
  readonly mode: RateLimitMode;
  /** `exact` for fixed windows; for the others, what the figures are to the algorithm (docs/choosing-limits.md). */
  readonly estimate: AdvisorEstimateKind;
  /** Client-windows seen over the period. */
  readonly clients: number;
  readonly requests: number;
  /** Requests this policy refused. */
  readonly denied: number;
  /** Requests it would have refused, in shadow mode (let through). */
  readonly shadowDenied: number;
  /** Ascending: the current limit, the caller's, and ¼, ½, 2 and 4 times the current one. */
  readonly candidates: readonly AdvisorCandidate[];
  /** The suggested limit, or null when nothing was seen. */
  readonly suggested: number | null;
  readonly suggestion: AdvisorSuggestion | null;
  readonly top: readonly AdvisorTopIdentity[];
  readonly timeline: readonly AdvisorTimelinePoint[];
  readonly distribution: readonly AdvisorDistributionPoint[];
}
