import type { AlgorithmName, RateLimitAlgorithm } from './algorithm.interface.js';
import { fixedWindow } from './fixed-window.algorithm.js';

/** Every algorithm, by name. A new algorithm is one entry here plus its own pair of files. */
export const ALGORITHMS: Readonly<Record<AlgorithmName, RateLimitAlgorithm>> = {
  'fixed-window': fixedWindow as RateLimitAlgorithm,
};

export const ALGORITHM_NAMES = Object.keys(ALGORITHMS) as AlgorithmName[];

export function getAlgorithm(name: string): RateLimitAlgorithm {
  const algorithm = (ALGORITHMS as Record<string, RateLimitAlgorithm | undefined>)[name];
  if (algorithm === undefined) {
    throw new Error(`Unknown rate-limit algorithm "${name}". Use one of: ${ALGORITHM_NAMES.join(', ')}.`);
  }
  return algorithm;
}
