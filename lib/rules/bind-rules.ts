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
      keySuffix: `${options.bucket}:${algorithm.code}${rate.windowMs}`,
      blockMs: options.blockMs ?? 0,
      count: options.count ?? 'all',
    };
  });
}

function windowLabel(windowMs: number): string {
  for (const [unit, ms] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000]] as const) {
    if (windowMs % ms === 0) return `${windowMs / ms}${unit}`;
  }
  return `${windowMs / 1000}s`;
}
