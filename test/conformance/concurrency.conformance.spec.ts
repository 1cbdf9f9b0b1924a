import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ALGORITHM_NAMES } from '../../lib/algorithms/algorithm-registry.js';
import type { AlgorithmName } from '../../lib/index.js';
import { RedisCheckBatch } from '../../lib/storage/redis-check-batch.js';
import { REDIS_CHECK_LUA } from '../../lib/storage/redis-check.lua.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { keyOf, rulesOf } from './limiter.js';

const WORKER = fileURLToPath(new URL('../support/concurrent-checks.mjs', import.meta.url));
const PER_PROCESS = 150;
const NOW = Date.UTC(2030, 0, 1, 12);

/** Starts a worker process, waits until it is connected, and returns a trigger for its burst. */
function startWorker(payload: object): Promise<{ go: () => Promise<number> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WORKER, JSON.stringify(payload)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let output = '';
    let answer: ((admitted: number) => void) | undefined;
    child.on('error', reject);
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.startsWith('ready\n') && !answer) {
        resolve({
          go: () =>
            new Promise<number>((done) => {
              answer = done;
              child.stdin.end('go\n');
            }),
        });
      }
      const line = output.split('\n')[1];
      if (answer && line) answer((JSON.parse(line) as { admitted: number }).admitted);
    });
  });
}

describe('concurrent checks from two processes against one Redis', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  it.each(ALGORITHM_NAMES)('%s never admits more than its bound, and loses no update', async (algorithm: AlgorithmName) => {
    // one instant for all checks: the bound is then exact, N for windows and the burst for buckets
    const rules = rulesOf([{ rate: '40/minute', algorithm, burst: 25 }]);
    const bound = rules[0].capacity;
    const checks = rules.map((rule) => ({ key: keyOf(`concurrent-${algorithm}`, rule), rule }));
    // each worker call is a batch of one check, as RedisStorage sends when a check is alone
    const batch = new RedisCheckBatch(NOW);
    batch.add({ checks, cost: 1, sentAt: NOW, resolve: () => undefined, reject: () => undefined });
    const payload = {
      url: redis.url,
      lua: REDIS_CHECK_LUA,
      numKeys: checks.length,
      args: [...batch.keys, ...batch.arguments('')],
      count: PER_PROCESS,
    };
    const workers = await Promise.all([startWorker(payload), startWorker(payload)]);
    const admitted = await Promise.all(workers.map((worker) => worker.go()));
    expect(admitted[0] + admitted[1]).toBe(bound);
  });
});
