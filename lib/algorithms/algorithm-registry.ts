import type { AlgorithmName, RateLimitAlgorithm } from './algorithm.interface.js';
import { fixedWindow } from './fixed-window.algorithm.js';
import { gcra } from './gcra.algorithm.js';
import { leakyBucket } from './leaky-bucket.algorithm.js';
import { slidingWindowCounter } from './sliding-window-counter.algorithm.js';
import { slidingWindowLog } from './sliding-window-log.algorithm.js';
import { tokenBucket } from './token-bucket.algorithm.js';

/** Every algorithm, by name. A new algorithm is one entry here plus its own pair of files. */
export const ALGORITHMS: Readonly<Record<AlgorithmName, RateLimitAlgorithm>> = {
  'fixed-window': fixedWindow,
  'sliding-window-log': slidingWindowLog,
  'sliding-window-counter': slidingWindowCounter,
  'token-bucket': tokenBucket,
  'leaky-bucket': leakyBucket,
  gcra,
};

export const ALGORITHM_NAMES = Object.keys(ALGORITHMS) as AlgorithmName[];

export function getAlgorithm(name: string): RateLimitAlgorithm {
  const algorithm = (ALGORITHMS as Record<string, RateLimitAlgorithm | undefined>)[name];
  if (algorithm === undefined) {
    throw new Error(`Unknown rate-limit algorithm "${name}". Use one of: ${ALGORITHM_NAMES.join(', ')}.`);
  }
  return algorithm;
}
