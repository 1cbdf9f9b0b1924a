import type { AlgorithmName } from '../algorithms/algorithm.interface.js';
import type {
  AdvisorCandidate,
  AdvisorEstimateKind,
  AdvisorPolicyReport,
  AdvisorSuggestion,
  AdvisorTimelinePoint,
  AdvisorTopIdentity,
} from './advisor-report.js';
import type { PolicyMeta } from './policy-usage.js';
import type { UsageHistogram } from './usage-histogram.js';

/** What the caller asks of a report. */
export interface AdvisorQuery {
  /** How far back to look, in ms. Default one hour. */
  readonly periodMs?: number;
  /** Limits to judge besides the current one and the default spread. */
  readonly candidates?: readonly number[];
  /** The share of clients the suggested limit may refuse. Default 0.001 (0.1%). */
  readonly target?: number;
  /** Identities listed. Default 10. */
  readonly top?: number;
}

export const DEFAULT_PERIOD_MS = 3_600_000;
export const DEFAULT_TARGET = 0.001;
export const DEFAULT_TOP = 10;
/** Around the current limit: what halving or doubling it, and more, would do. */
const SPREAD = [0.25, 0.5, 2, 4];
/** Candidates a report judges at most, so a query cannot make it large. */
const MAX_CANDIDATES = 32;

/**
 * What the figures mean to each algorithm: the histogram counts, per client, the requests made
 * in each fixed window aligned on the epoch. A fixed window refuses exactly those past its
 * limit; a sliding window, which also limits every span straddling two aligned windows, refuses
 * at least those; a bucket may admit up to its burst more in one aligned window, or refuse
 * earlier in a burst, so its figures are an approximation (docs/choosing-limits.md).
 */
export const ESTIMATE_KINDS: Readonly<Record<AlgorithmName, AdvisorEstimateKind>> = {
  'fixed-window': 'exact',
  'sliding-window-log': 'lower-bound',
  'sliding-window-counter': 'lower-bound',
  'token-bucket': 'approximate',
  'leaky-bucket': 'approximate',
  gcra: 'approximate',
};

/** The facts of one policy over the period, from this instance or from Redis. */
export interface PolicyFigures {
  readonly meta: PolicyMeta;
  readonly histogram: UsageHistogram;
  readonly denied: number;
  readonly shadowDenied: number;
  readonly timeline: readonly AdvisorTimelinePoint[];
  /** The heaviest identities, heaviest first, already shown as the report shows them. */
  readonly top: readonly AdvisorTopIdentity[];
}

/** Validated candidates and target, or an error naming what is wrong. */
export function checkQuery(query: AdvisorQuery): void {
  const { periodMs, candidates, target, top } = query;
  if (periodMs !== undefined && !(periodMs > 0 && periodMs <= 30 * 86_400_000)) throw new RangeError(`period must be from 1 ms to 30 days, got ${periodMs}`);
  if (target !== undefined && !(target >= 0 && target < 1)) throw new RangeError(`target must be a share from 0 to 1 (0.001 for 0.1%), got ${target}`);
  if (top !== undefined && !(Number.isSafeInteger(top) && top >= 0 && top <= 1_000)) throw new RangeError(`top must be an integer from 0 to 1000, got ${top}`);
  if (candidates !== undefined) {
    if (candidates.length > MAX_CANDIDATES) throw new RangeError(`at most ${MAX_CANDIDATES} candidate limits, got ${candidates.length}`);
    for (const limit of candidates) if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`candidate limits must be positive integers, got ${limit}`);
  }
}

export function policyReport(figures: PolicyFigures, query: AdvisorQuery): AdvisorPolicyReport {
  const { meta, histogram } = figures;
  const clients = histogram.clients;
  const requests = histogram.requests;
  const limits = new Set<number>([meta.limit, ...(query.candidates ?? [])]);
  for (const factor of SPREAD) limits.add(Math.max(1, Math.round(meta.limit * factor)));
  const candidates = [...limits].sort((a, b) => a - b).map((limit) => candidate(histogram, limit, clients, requests));
  const suggestion = suggest(histogram, query.target ?? DEFAULT_TARGET, clients, requests);
  const distribution = [];
  let from = requests;
  for (let k = 0; k < meta.thresholds.length; k++) {
    distribution.push({ threshold: meta.thresholds[k], clients: histogram.reached[k], requests: from });
    from -= histogram.from[k];
  }
  return {
    name: meta.name,
    rate: meta.rate,
    limit: meta.limit,
    windowSeconds: meta.windowMs / 1000,
    algorithm: meta.algorithm,
    mode: meta.mode,
    estimate: ESTIMATE_KINDS[meta.algorithm],
    clients,
    requests,
    denied: figures.denied,
    shadowDenied: figures.shadowDenied,
    candidates,
    suggested: suggestion?.limit ?? null,
    suggestion,
    top: figures.top.slice(0, query.top ?? DEFAULT_TOP),
    timeline: figures.timeline,
    distribution,
  };
}

function candidate(histogram: UsageHistogram, limit: number, clients: number, requests: number): AdvisorCandidate {
  const estimate = histogram.estimate(limit);
  const clientsRange = { low: share(estimate.clientsDenied.low, clients), high: share(estimate.clientsDenied.high, clients) };
  const requestsRange = { low: share(estimate.requestsDenied.low, requests), high: share(estimate.requestsDenied.high, requests) };
  return {
    limit,
    clientsDenied: (clientsRange.low + clientsRange.high) / 2,
    requestsDenied: (requestsRange.low + requestsRange.high) / 2,
    exact: estimate.exact,
    clientsDeniedRange: clientsRange,
    requestsDeniedRange: requestsRange,
  };
}

/**
 * The smallest limit sure to refuse at most `target` of the clients: one below the first
 * threshold that few enough clients reached. Any limit between thresholds has the same upper
 * bound as the one below it, so none smaller is sure to meet the target. Null when nothing was
 * seen, or when more than `target` of the clients went past the last threshold (16 × the limit).
 */
function suggest(histogram: UsageHistogram, target: number, clients: number, requests: number): AdvisorSuggestion | null {
  if (clients === 0) return null;
  const { thresholds, reached } = histogram;
  for (let k = 1; k < thresholds.length; k++) {
    if (reached[k] > target * clients) continue;
    const limit = thresholds[k] - 1;
    const estimate = histogram.estimate(limit);
    return {
      limit,
      target,
      clientsDenied: share(estimate.clientsDenied.high, clients),
      requestsDenied: share(estimate.requestsDenied.high, requests),
      clients,
      requests,
    };
  }
  return null;
}

function share(part: number, whole: number): number {
  return whole === 0 ? 0 : part / whole;
}
