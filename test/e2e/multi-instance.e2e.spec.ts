import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Redis } from 'ioredis';
import { routeId } from '../../lib/rules/route-id.js';
import { freePort, startRedis, type TestRedis } from '../support/redis-server.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
// Inside the repo, so the compiled ESM finds package.json ("type": "module") and node_modules.
// One directory per run: concurrent test runs in this tree must not delete each other's build.
const BUILD_ROOT = join(ROOT, '.test-build');
const BUILD = join(BUILD_ROOT, `run-${process.pid}`);
const MAIN = join(BUILD, 'sample-app', 'main.js');
/** The platform of each instance (SAMPLE_ADAPTER): Express and Fastify share one budget. */
const PLATFORMS = ['express', 'fastify', 'express'] as const;
const INSTANCES = PLATFORMS.length;
const REQUESTS = 600;
const LIMIT = 5; // GET /items: 5/minute per IP

interface Instance {
  readonly platform: string;
  readonly port: number;
  readonly child: ChildProcess;
  log: string;
}

/** SIGTERM, then wait for the exit; SIGKILL if it hangs. Resolves to how it ended. */
function terminate(child: ChildProcess): Promise<string> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(`already ${child.exitCode ?? child.signalCode}`);
  return new Promise((resolve) => {
    const hang = setTimeout(() => child.kill('SIGKILL'), 5_000);
    child.once('exit', (code, signal) => {
      clearTimeout(hang);
      resolve(signal === 'SIGKILL' ? 'killed' : `exited ${code ?? signal}`);
    });
    child.kill('SIGTERM');
  });
}

async function waitForHealth(instance: Instance): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (instance.child.exitCode !== null) throw new Error(`sample app on ${instance.platform} exited (${instance.child.exitCode}):\n${instance.log}`);
    const ok = await fetch(`http://127.0.0.1:${instance.port}/health`).then(
      async (res) => (await res.arrayBuffer(), res.status === 200),
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`sample app on ${instance.platform}, port ${instance.port}, not healthy within 20 s:\n${instance.log}`);
}

/** Milliseconds since the epoch by Redis's clock, which is what the Lua script windows by. */
async function redisNow(client: Redis): Promise<number> {
  const [seconds, micros] = await client.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

describe('the sample app as separate processes, on Express and on Fastify, on one Redis', () => {
  let redis: TestRedis;
  let admin: Redis;
  const instances: Instance[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    admin = redis.client();
    const tsc = join(ROOT, 'node_modules', '.bin', 'tsc');
    await promisify(execFile)(tsc, ['-p', 'tsconfig.build.json', '--outDir', BUILD], { cwd: ROOT }).catch((error: { stdout?: string }) => {
      // Type errors still emit JS; only a missing entry point stops the test.
      if (!existsSync(MAIN)) throw new Error(`tsc produced no ${MAIN}:\n${error.stdout ?? String(error)}`);
    });
    for (const platform of PLATFORMS) {
      const port = await freePort();
      // each its own gRPC port too: the default, 50051, would serve one instance and stop the others
      const grpcPort = await freePort();
      const child = spawn(process.execPath, [MAIN], {
        cwd: ROOT,
        // Exactness must not rest on a timeout holding on a busy machine: a generous one, and 'deny',
        // so a check that still fails is a 503 counted apart, charged nowhere (its script runs late
        // or not at all, and then does nothing), instead of a request let through uncounted.
        // an admin key of its own, as a deployment has: the demo key would be warned about
        env: { ...process.env, PORT: String(port), GRPC_PORT: String(grpcPort), REDIS_URL: redis.url, SAMPLE_ADAPTER: platform, STORAGE_TIMEOUT: '1000', ON_STORAGE_ERROR: 'deny', ADMIN_API_KEY: 'multi-instance-admin-key' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const instance: Instance = { platform, port, child, log: '' };
      child.stdout!.on('data', (chunk: Buffer) => (instance.log += chunk.toString()));
      child.stderr!.on('data', (chunk: Buffer) => (instance.log += chunk.toString()));
      instances.push(instance);
    }
    await Promise.all(instances.map(waitForHealth));
  }, 120_000);

  afterAll(async () => {
    await Promise.all(instances.map((instance) => terminate(instance.child)));
    await redis?.stop();
    rmSync(BUILD, { recursive: true, force: true });
    if (existsSync(BUILD_ROOT) && readdirSync(BUILD_ROOT).length === 0) rmSync(BUILD_ROOT, { recursive: true, force: true });
  }, 30_000);

  it(`admits exactly ${LIMIT} of ${REQUESTS} concurrent requests from one client, in total across ${INSTANCES} instances`, async () => {
    expect(new Set(instances.map((i) => i.port)).size).toBe(INSTANCES);
    // The apps use the real clock and minute-aligned windows: a burst straddling :00 would get
    // two budgets. Near the end of a minute, wait for the next one (at most 5 s).
    const intoMinute = (await redisNow(admin)) % 60_000;
    if (intoMinute > 55_000) await new Promise((r) => setTimeout(r, 60_000 - intoMinute + 50));
    const windowStart = Math.floor((await redisNow(admin)) / 60_000);

    const results = await Promise.all(
      Array.from({ length: REQUESTS }, async (_, i) => {
        const response = await fetch(`http://127.0.0.1:${instances[i % INSTANCES].port}/items`);
        await response.arrayBuffer();
        return { status: response.status };
      }),
    );
    expect(Math.floor((await redisNow(admin)) / 60_000)).toBe(windowStart); // else the count below is meaningless

    const count = (status: number) => results.filter((r) => r.status === status).length;
    // The apps' warnings and errors ride along, so a miscount shows its cause; a storage that did
    // not answer in time is the one complaint that may come, with its 503s.
    const complaints = instances.flatMap((i) => i.log.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter((line) => /WARN|ERROR/.test(line)));
    const unexplained = complaints.filter((line) => !(count(503) > 0 && /did not answer in time; applying the 'deny' failure policy/.test(line)));
    expect({ ok: count(200), refused: count(429) + count(503), unexplained }).toEqual({ ok: LIMIT, refused: REQUESTS - LIMIT, unexplained: [] });

    // One counter for the client, in Redis, at exactly the limit; and the limit advisor's count of
    // its attempts (npm start runs with the advisor on), every one of the 600, whichever instance
    // took it. Every instance derived the same route id from the route's name, and logged it at start-up.
    const key = `rl:{ip:127.0.0.1}:${routeId('ItemsController.findAll')}:fw1m`;
    const attempts = `${key}:o${windowStart}`;
    // the advisor's own figures (rl:advisor:...) arrive with each instance's flush
    expect((await admin.keys('*')).filter((name) => !name.startsWith('rl:advisor:')).sort()).toEqual([key, attempts]);
    expect(await admin.get(attempts)).toBe(String(REQUESTS));
    for (const { log } of instances) expect(log).toContain(`ItemsController.findAll → rl:{…}:${routeId('ItemsController.findAll')}:fw1m`);
    // fixed-window state: the count, then the window's number in 9 digits
    expect(await admin.get(key)).toBe(`${LIMIT}${String((windowStart + 1) % 1e9).padStart(9, '0')}`);

    // And every instance now refuses the client, with the shared countdown.
    for (const { port } of instances) {
      const response = await fetch(`http://127.0.0.1:${port}/items`);
      expect(response.status).toBe(429);
      expect(response.headers.get('ratelimit')).toMatch(/^"ItemsController\.findAll";r=0;t=\d+$/);
      expect(await response.json()).toMatchObject({ statusCode: 429, message: 'Rate limit exceeded' });
    }
  });

  it('shuts every instance down on SIGTERM', async () => {
    const endings = await Promise.all(instances.map((instance) => terminate(instance.child)));
    expect(endings).toEqual(Array.from({ length: INSTANCES }, () => expect.stringMatching(/^exited (0|SIGTERM)$/)));
  });
});
