import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { compileForChildProcesses, ROOT } from '../support/compiled-library.js';

const CHILD = fileURLToPath(new URL('../support/heap-growth.mjs', import.meta.url));
const REQUESTS = 20_000;

interface Report {
  growthBytes: number;
  statuses: Record<string, number>;
  sameKey: string[];
  seconds: number;
}

describe('memory a client controls', () => {
  let build: Awaited<ReturnType<typeof compileForChildProcesses>>;
  beforeAll(async () => {
    build = await compileForChildProcesses('heap');
  }, 120_000);
  afterAll(() => build?.remove());

  it('20,000 distinct 15,000-character API keys on two routes grow the heap by less than 30 MB', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', CHILD, build.libraryIndex, String(REQUESTS)], {
      cwd: ROOT,
      maxBuffer: 1 << 20,
    });
    const report = JSON.parse(stdout.trim().split('\n').pop()!) as Report;
    // every request was served and counted: none refused, none failed
    expect(report.statuses).toEqual({ 200: 2 * REQUESTS });
    // a long key is hashed, not cached, and still one client
    expect(report.sameKey[0]).toMatch(/^"KeysController\.byHeader";r=999999;t=\d+$/);
    expect(report.sameKey[1]).toMatch(/^"KeysController\.byHeader";r=999998;t=\d+$/);
    expect(report.growthBytes).toBeLessThan(30 * 1024 * 1024);
  }, 240_000);
});
