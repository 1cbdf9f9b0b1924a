import type { AlgorithmName } from '../algorithms/algorithm.interface.js';
import { getAlgorithm } from '../algorithms/algorithm-registry.js';
import { policyName } from '../headers/rate-limit-headers.js';
import type { ParsedRate } from './parse-rate.js';
import type { RateLimitCount, RateLimitRule } from './rate-limit-rule.js';

export interface BindOptions {
  /** Policy name; rules after the first of several get a window suffix such as `-1m`. */
  readonly name: string;
  /** Key segment the rules' state lives under: routes sharing it share a budget. */
  readonly bucket: string;
  readonly algorithm: AlgorithmName;
  /** Capacity of bucket-like algorithms; each rule's own limit when absent. */
  readonly burst?: number;
  readonly blockMs?: number;
  readonly count?: RateLimitCount;
  /** Whether the limit advisor follows the rules. */
  readonly observed?: boolean;
}

/** Binds parsed rates to an algorithm and a place in storage. Done once per route, at start-up. */
export function bindRules(rates: readonly ParsedRate[], options: BindOptions): RateLimitRule[] {
  const algorithm = getAlgorithm(options.algorithm);
  return rates.map((rate) => {
    const burst = options.burst ?? rate.limit;
    return {
      name: policyName(rates.length === 1 ? options.name : `${options.name}-${windowLabel(rate.windowMs)}`),
      text: rate.text,
      limit: rate.limit,
      windowMs: rate.windowMs,
      algorithm: options.algorithm,
      burst,
      capacity: algorithm.usesBurst ? burst : rate.limit,
      keySuffix: ruleKeySuffix(options.bucket, algorithm.code, rate.windowMs),
      blockMs: options.blockMs ?? 0,
      count: options.count ?? 'all',
      observed: options.observed === true,
    };
  });
}

/**
 * A rule's place in storage after the client's hash tag: `<bucket>:<algorithm code><window>`,
 * e.g. `NrjO:fw1m`. Routes and service calls build it alike, so they share a budget.
 */
function ruleKeySuffix(bucket: string, algorithmCode: string, windowMs: number): string {
  return `${bucket}:${algorithmCode}${windowLabel(windowMs)}`;
}

const UNITS = [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1_000]] as const;

/**
 * A window as written in keys and policy names: in its largest whole unit (`1d`, `2h`, `1m`,
 * `90s`), or in milliseconds (`1500ms`). One window, one label, and no two windows share one:
 * the label reads back as the number of milliseconds it came from.
 */
export function windowLabel(windowMs: number): string {
  for (const [unit, ms] of UNITS) {
    if (windowMs % ms === 0) return `${windowMs / ms}${unit}`;
  }
  return `${windowMs}ms`;
}
