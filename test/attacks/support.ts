import type { INestApplication, Type } from '@nestjs/common';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RateLimitModuleOptions } from '../../lib/index.js';
import { startPrivateRedis, type ControllableRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, type HttpPlatform } from '../support/scenario-app.js';

/**
 * The harness of the attack rerun (`npm run attacks`): real sleeps, real hang-ups, real Redis
 * stalls, against apps written with the public API only. Only this harness reaches into
 * test/support; the controllers of each attack import from lib/index.js alone.
 */

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export { until } from '../support/until.js';

/**
 * Waits, if needed, so that at least `needMs` are left in the current window of `windowMs`
 * (aligned to the epoch, as fixed windows are): a trial must not straddle a window boundary that
 * would legitimately give its client a fresh budget.
 */
export async function clearOfBoundary(windowMs: number, needMs: number): Promise<void> {
  const left = windowMs - (Date.now() % windowMs);
  if (left < needMs) await sleep(left + 20);
}

/** What the attacker's client saw of one request. */
export interface Answer {
  readonly status: number | 'hung up';
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

export interface SendOptions {
  method?: string;
  headers?: Record<string, string>;
  /** JSON body. */
  body?: unknown;
  /** Destroys the socket this long after the request was sent, if no answer came by then. */
  destroyAfterMs?: number;
}

/** One request on its own connection (node:http, agent: false), as an attacker's script sends it. */
export function send(port: number, path: string, options: SendOptions = {}): { answer: Promise<Answer>; destroy(): void } {
  const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
  const request = httpRequest({
    host: '127.0.0.1',
    port,
    path,
    method: options.method ?? (payload === undefined ? 'GET' : 'POST'),
    agent: false,
    headers: {
      ...options.headers,
      ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) }),
    },
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const answer = new Promise<Answer>((resolve) => {
    request.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        clearTimeout(timer);
        resolve({ status: response.statusCode!, headers: response.headers, body });
      });
      response.on('error', () => resolve({ status: 'hung up', headers: {}, body: '' }));
    });
    request.on('error', () => {
      clearTimeout(timer);
      resolve({ status: 'hung up', headers: {}, body: '' });
    });
  });
  request.end(payload);
  if (options.destroyAfterMs !== undefined) timer = setTimeout(() => request.destroy(), options.destroyAfterMs);
  return { answer, destroy: () => request.destroy() };
}

/** The Node response under an Express response or a Fastify reply. */
export function rawResponse(response: unknown): { closed: boolean } {
  return ((response as { raw?: unknown }).raw ?? response) as { closed: boolean };
}

/** One app instance listening on loopback. */
export interface Instance {
  readonly app: INestApplication;
  readonly port: number;
  get<T>(token: Type<T>): T;
}

/** Memory: one instance. Redis: instances A and B on one Redis, which the attacker's requests alternate between. */
export interface Deployment {
  readonly storage: 'memory' | 'redis';
  readonly platform: HttpPlatform;
  readonly instances: readonly Instance[];
  /** The instance of the attacker's n-th request: always the one on memory; A, B, A, B... on Redis. */
  pick(n: number): Instance;
  /** The table's storage column, e.g. `redis (A+B), express`. */
  readonly label: string;
  close(): Promise<void>;
}

export interface DeployOptions {
  platform?: HttpPlatform;
  /** Module options besides the storage. */
  module?: Omit<RateLimitModuleOptions, 'storage'>;
  /** Redis storage config besides type and url (e.g. blockCache). */
  redisStorage?: { blockCache?: { maxKeys?: number } | false };
  providers?: NonNullable<Parameters<typeof createScenarioApp>[2]>['providers'];
}

/** Builds the attacked app: on memory (one instance) or on `redis` (two instances, A and B). */
export async function deploy(controllers: Type[], storage: 'memory' | 'redis', redis: TestRedis | undefined, options: DeployOptions = {}): Promise<Deployment> {
  const platform = options.platform ?? 'express';
  const count = storage === 'memory' ? 1 : 2;
  const instances: Instance[] = [];
  const close = async () => {
    for (const { app } of instances.splice(0).reverse()) await app.close();
  };
  try {
    for (let i = 0; i < count; i++) {
      const moduleOptions: RateLimitModuleOptions = {
        ...options.module,
        storage: storage === 'memory' ? { type: 'memory' } : { type: 'redis', url: redis!.url, ...options.redisStorage },
      };
      const app = await createScenarioApp(controllers, moduleOptions, { platform, forceCloseConnections: true, providers: options.providers, asShipped: true });
      await app.listen(0, '127.0.0.1');
      const port = (app.getHttpServer().address() as AddressInfo).port;
      instances.push({ app, port, get: (token) => app.get(token) });
    }
  } catch (error) {
    await close();
    throw error;
  }
  return {
    storage,
    platform,
    instances,
    pick: (n) => instances[n % instances.length],
    label: `${storage === 'memory' ? 'memory' : 'redis (A+B)'}, ${platform}`,
    close,
  };
}

/** One attack file's run: a private Redis for its tests, and its rows, reported when the file ends. */
export interface AttackRun {
  readonly rows: Row[];
  /** Set before the file's first test. */
  readonly redis: ControllableRedis;
}

/** Registers the file's beforeAll and afterAll: the Redis started, then stopped and the rows reported. */
export function attackRun(file: string): AttackRun {
  const run = { rows: [] as Row[], redis: undefined as unknown as ControllableRedis };
  beforeAll(async () => {
    run.redis = await startPrivateRedis();
  });
  afterAll(async () => {
    await run.redis?.stop();
    report(file, run.rows);
  });
  return run;
}

/** One line of the table. */
export interface Row {
  readonly attack: string;
  readonly storage: string;
  readonly trials: string;
  readonly measured: string;
  readonly observed: string;
  readonly bound: string;
  /** Whether the observed figure is within the bound. */
  readonly held: boolean;
}

const HERE = dirname(fileURLToPath(import.meta.url));
const RESULTS = join(HERE, 'results.md');
/** Rows of this run, by attack file, shared by the files Jest runs one after another in this process. */
const RUN_FILE = join(tmpdir(), `nestjs-rate-limiting-attacks-${process.pid}.json`);

interface RunState {
  readonly files: Record<string, Row[]>;
}

/**
 * Records one attack file's rows. Once every `*.attack.ts` file of this directory has recorded
 * its rows in this run, prints the whole table and writes it to results.md; before that (or
 * when only some files run), prints this file's rows.
 */
export function report(file: string, rows: readonly Row[]): void {
  removeAbandonedRuns();
  const state: RunState = existsSync(RUN_FILE) ? JSON.parse(readFileSync(RUN_FILE, 'utf8')) : { files: {} };
  state.files[basename(file)] = [...rows];
  const expected = readdirSync(HERE).filter((name) => name.endsWith('.attack.ts'));
  const done = expected.every((name) => state.files[name] !== undefined);
  if (!done) {
    writeFileSync(RUN_FILE, JSON.stringify(state));
    process.stdout.write(`\n${basename(file)}:\n\n${table(rows)}\n`);
    return;
  }
  rmSync(RUN_FILE, { force: true });
  const all = expected.flatMap((name) => state.files[name]).sort((a, b) => attackNumber(a) - attackNumber(b));
  const failed = all.filter((row) => !row.held).length;
  const text =
    '# Attack rerun (issue 19), real timing\n\n' +
    `\`npm run attacks\` (test/attacks), ${new Date().toISOString()}, Node ${process.version}, ` +
    `${Math.round(process.uptime())} s in all. ${failed === 0 ? 'Every bound held.' : `${failed} bound(s) NOT held.`}\n\n` +
    `${table(all)}\n`;
  writeFileSync(RESULTS, text);
  process.stdout.write(`\n${text}\n`);
}

/** Run files of earlier runs that stopped before their last attack file (a single file run, a crash). */
function removeAbandonedRuns(): void {
  for (const name of readdirSync(tmpdir())) {
    const pid = Number(/^nestjs-rate-limiting-attacks-(\d+)\.json$/.exec(name)?.[1]);
    if (!pid || pid === process.pid) continue;
    try {
      process.kill(pid, 0); // still running: maybe another run beside this one
    } catch {
      rmSync(join(tmpdir(), name), { force: true });
    }
  }
}

function attackNumber(row: Row): number {
  return Number(/^(\d+)/.exec(row.attack)?.[1] ?? 99);
}

function table(rows: readonly Row[]): string {
  const cell = (text: string) => text.replace(/\|/g, '\\|');
  const lines = ['| attack | storage | trials | what was measured | observed | bound |', '|---|---|---|---|---|---|'];
  for (const row of rows) {
    lines.push(`| ${[row.attack, row.storage, row.trials, row.measured, `${row.observed}${row.held ? '' : ' **OVER**'}`, row.bound].map(cell).join(' | ')} |`);
  }
  return lines.join('\n');
}
