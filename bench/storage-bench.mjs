// Storage-level benchmark: this library's MemoryStorage / RedisStorage against rate-limiter-flexible's
// RateLimiterMemory / RateLimiterRedis, with no HTTP in the way.
//
//   1. Storage alone: checks per second, closed loop with STORAGE_CONCURRENCY (256) checks in flight
//      over STORAGE_KEYS (10,000) keys taken round-robin, STORAGE_DURATION (3) s per run,
//      STORAGE_ROUNDS (5) interleaved rounds (contender order rotated each round), medians reported.
//   2. Memory: heap bytes per key in MemoryStorage after STORAGE_MEMORY_KEYS (1,000,000) keys, each
//      algorithm in a fresh `node --expose-gc` child; Redis `MEMORY USAGE` per key for 15-character
//      identities (fixed-window target: ≤ 100 B).
//
// Run from the repository root: `npm run bench:storage` (builds, then runs this). Short run:
//   STORAGE_DURATION=1 STORAGE_ROUNDS=2 STORAGE_MEMORY_KEYS=100000 node bench/storage-bench.mjs
// Other knobs: STORAGE_WARMUP (s per contender before round 1, default 0.5), STORAGE_CONCURRENCY,
// STORAGE_KEYS, STORAGE_SCENARIOS ("throughput,memory"), STORAGE_LIB (directory of the built
// library, default dist/esm), STORAGE_OUT (default bench/results-storage.md), STORAGE_TIMEOUT
// (s for the whole run, default 900).
//
// A private redis-server is started on a free port (--save '' --appendonly no) and killed at the end.
// Output: markdown on stdout and in bench/results-storage.md; with BENCH_ROWS_FILE set (the HTTP
// runner, bench/src/run.ts, sets it), also the same results as a JSON array of rows of the runner's
// one table (see throughputRows / memoryRows). From code:
//   import { runStorageBench } from './storage-bench.mjs';
//   const { markdown, rows } = await runStorageBench(); // also writes bench/results-storage.md
import { execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = fileURLToPath(import.meta.url);
const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const LIB_DIR = resolve(root, process.env.STORAGE_LIB ?? 'dist/esm');
const libUrl = (path) => pathToFileURL(resolve(LIB_DIR, path)).href;
const num = (name, fallback) => (process.env[name] === undefined || process.env[name] === '' ? fallback : Number(process.env[name]));

// The library's own ioredis (the one RedisStorage uses), whatever bench/ may install for itself.
const { Redis } = createRequire(resolve(root, 'package.json'))('ioredis');
// rate-limiter-flexible from bench/package.json.
const { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } = createRequire(import.meta.url)('rate-limiter-flexible');

/** Keys shaped as the guard builds them: `rl:{ip:10.x.y.z}:` (storageKeyBase) + rule.keySuffix. */
const ipOf = (i) => `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
/** A 15-character identity (`ip:10.100.10.10` on): the client the Redis memory target is stated for. Distinct for i < 1,263,600. */
const identity15 = (i) => `ip:10.${100 + (Math.floor(i / 8100) % 156)}.${10 + (Math.floor(i / 90) % 90)}.${10 + (i % 90)}`;
/** The route the keys belong to; its keys carry its route id (routeId), as the guard builds them for a route without `bucket`. */
const BUCKET = 'ItemsController.findAll';
/** MEMORY USAGE per fixed-window key must stay within this (issue 13). */
const REDIS_FIXED_WINDOW_TARGET = 100;
const HIGH_RATE = '1000000/minute'; // never denies in the throughput runs
const MEMORY_RATE = '100/minute';

async function loadLibrary() {
  const [{ MemoryStorage, RedisStorage, parseRate }, { bindRules }, { ALGORITHM_NAMES }, { storageKeyBase }, { routeId }] = await Promise.all([
    import(libUrl('index.js')),
    import(libUrl('rules/bind-rules.js')),
    import(libUrl('algorithms/algorithm-registry.js')),
    import(libUrl('keys/storage-key.js')),
    import(libUrl('rules/route-id.js')),
  ]);
  const ruleFor = (rate, algorithm) => bindRules(parseRate(rate), { name: BUCKET, bucket: routeId(BUCKET), algorithm })[0];
  return { MemoryStorage, RedisStorage, ALGORITHM_NAMES, storageKeyBase, ruleFor };
}

// ---------------------------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------------------------

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

async function startRedis() {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let exited = false;
    child.once('exit', () => (exited = true));
    const url = `redis://127.0.0.1:${port}`;
    const admin = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
    admin.on('error', () => {});
    const deadline = Date.now() + 5_000;
    while (!exited && Date.now() < deadline) {
      try {
        if (admin.status === 'wait') await admin.connect();
        if ((await admin.ping()) === 'PONG') break;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    if (!exited && admin.status === 'ready') {
      const version = /redis_version:(\S+)/.exec(await admin.info('server'))?.[1];
      return { port, url, admin, version, stop: () => stopRedis(child, admin) };
    }
    admin.disconnect();
    child.kill('SIGKILL');
    if (attempt >= 3) throw new Error('could not start redis-server');
  }
}

async function stopRedis(child, admin) {
  admin.disconnect();
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 2_000);
  await gone;
  clearTimeout(timer);
}

async function redisCpuSeconds(admin) {
  const info = await admin.info('cpu');
  const get = (field) => Number(new RegExp(`${field}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  return get('used_cpu_sys') + get('used_cpu_user');
}

async function connectedClient(url, options) {
  const client = new Redis(url, options);
  client.on('error', () => {});
  if (client.status !== 'ready') await new Promise((ok) => client.once('ready', ok));
  return client;
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: storage alone, checks per second
// ---------------------------------------------------------------------------------------------

/**
 * Closed loop: `concurrency` workers, each awaiting one check and then issuing the next, until
 * `durationMs` has passed; the checks still in flight then finish and count.
 *
 * Promise overhead is the same on both sides: every check, whatever it returns, is consumed by one
 * `await` in the worker. MemoryStorage.check returns its result synchronously (awaiting a plain
 * value costs one microtask); RateLimiterMemory.consume returns a native promise already settled
 * (awaiting it also costs one microtask tick); the Redis contenders return pending promises.
 * No contender gets an extra wrapper (no `Promise.resolve(...)` or `async` shim around either).
 */
async function closedLoop(check, keyCount, concurrency, durationMs) {
  let next = 0;
  let completed = 0;
  let denied = 0;
  let errors = 0;
  let firstError;
  let stop = false;
  const start = performance.now();
  const end = start + durationMs;
  const cpuBefore = process.cpuUsage();
  async function worker() {
    while (!stop) {
      const i = next;
      next = i + 1 === keyCount ? 0 : i + 1;
      try {
        const result = await check(i);
        if (result.allowed === false) denied++;
      } catch (error) {
        if (error instanceof RateLimiterRes) denied++; // rate-limiter-flexible rejects a denial with its result
        else {
          errors++;
          firstError ??= error;
        }
      }
      // A memory contender never yields to the event loop, so the clock is read here, not by a timer.
      if ((++completed & 63) === 0 && performance.now() >= end) stop = true;
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  return {
    rate: completed / seconds,
    completed,
    seconds,
    denied,
    errors,
    firstError: firstError && String(firstError.message ?? firstError),
    nodeCpuUsPerCheck: (cpu.user + cpu.system) / completed,
  };
}

async function throughputScenario(lib, redis, settings) {
  const { MemoryStorage, RedisStorage, ALGORITHM_NAMES, storageKeyBase, ruleFor } = lib;
  const { keys, concurrency } = settings;
  // Each side is called as its users call it: ours with the checks the guard keeps per client
  // (RuleSet.checksFor: one key string per client and rule, built once); rate-limiter-flexible
  // with the client's key, to which it adds its keyPrefix itself (a key of similar length).
  const bases = Array.from({ length: keys }, (_, i) => storageKeyBase('rl', `ip:${ipOf(i)}`));
  const checksOf = (rule) => bases.map((base) => [{ key: base + rule.keySuffix, rule }]);
  const rlfKeys = Array.from({ length: keys }, (_, i) => `{ip:${ipOf(i)}}:${BUCKET}`);

  const contenders = [];
  for (const algorithm of ALGORITHM_NAMES) {
    const checks = checksOf(ruleFor(HIGH_RATE, algorithm));
    let storage;
    contenders.push({
      group: 'memory', name: 'MemoryStorage', algorithm,
      // a fresh storage per run, so every run starts from the same (empty) state
      setup: () => void (storage = new MemoryStorage()),
      check: (i) => storage.check(checks[i], 1),
    });
  }
  {
    let limiter;
    contenders.push({
      group: 'memory', name: 'RateLimiterMemory', algorithm: 'fixed window (rlf)',
      setup: () => void (limiter = new RateLimiterMemory({ points: 1_000_000, duration: 60, keyPrefix: 'rl' })),
      check: (i) => limiter.consume(rlfKeys[i]),
    });
  }
  if (redis) {
    const closers = [];
    for (const algorithm of ALGORITHM_NAMES) {
      const checks = checksOf(ruleFor(HIGH_RATE, algorithm));
      // { url } only: the storage's own client defaults (it batches checks itself; no ioredis
      // auto-pipelining). The block cache stays on, as by default, but is idle: nothing is denied here.
      const storage = new RedisStorage({ url: redis.url });
      await storage.init();
      closers.push(() => storage.close());
      contenders.push({
        group: 'redis', name: 'RedisStorage', algorithm,
        setup: () => redis.admin.flushdb(),
        check: (i) => storage.check(checks[i], 1),
      });
    }
    for (const [label, options] of [
      ['ioredis enableAutoPipelining', { enableAutoPipelining: true }],
      ['ioredis defaults', {}],
    ]) {
      const client = await connectedClient(redis.url, options);
      closers.push(() => client.quit());
      const limiter = new RateLimiterRedis({ storeClient: client, points: 1_000_000, duration: 60, keyPrefix: 'rl' });
      contenders.push({
        group: 'redis', name: 'RateLimiterRedis', algorithm: `fixed window (rlf), ${label}`, autoPipelining: !!options.enableAutoPipelining,
        setup: () => redis.admin.flushdb(),
        check: (i) => limiter.consume(rlfKeys[i]),
      });
    }
    settings.closers = closers;
  }

  const runOne = async (contender, durationMs) => {
    await contender.setup();
    const redisCpuBefore = contender.group === 'redis' ? await redisCpuSeconds(redis.admin) : 0;
    const run = await closedLoop(contender.check, keys, concurrency, durationMs);
    if (contender.group === 'redis') run.redisCpuUsPerCheck = ((await redisCpuSeconds(redis.admin)) - redisCpuBefore) * 1e6 / run.completed;
    return run;
  };

  if (settings.warmupMs > 0) {
    for (const contender of contenders) await runOne(contender, settings.warmupMs);
  }
  for (const contender of contenders) contender.runs = [];
  for (let round = 0; round < settings.rounds; round++) {
    // Interleaved rounds, order rotated so no contender always runs first or right after another.
    const shift = Math.round((round * contenders.length) / settings.rounds);
    const order = [...contenders.slice(shift), ...contenders.slice(0, shift)];
    for (const contender of order) {
      contender.runs[round] = await runOne(contender, settings.durationMs);
      process.stderr.write(
        `  round ${round + 1}/${settings.rounds} ${contender.name} ${contender.algorithm}: ${fmt(contender.runs[round].rate)} checks/s\n`,
      );
    }
  }
  for (const close of settings.closers ?? []) await close();
  return contenders;
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: memory per key
// ---------------------------------------------------------------------------------------------

/** In a child started with --expose-gc: heap (and array buffer) growth per key after `keys` checks of distinct keys. */
async function measureHeapChild(kind, algorithm, keys) {
  const gc = () => {
    global.gc();
    global.gc();
  };
  const fill = async () => {
    if (kind === 'rlf') {
      const limiter = new RateLimiterMemory({ points: 100, duration: 60, keyPrefix: 'rl' });
      for (let i = 0; i < keys; i++) await limiter.consume(`{ip:${ipOf(i)}}:${BUCKET}`);
      return { held: limiter._memoryStorage._storage.size, keep: limiter };
    }
    const { MemoryStorage, storageKeyBase, ruleFor } = await loadLibrary();
    if (kind === 'map') {
      // Baseline: the same key strings in a bare Map to `true`, i.e. what the keys alone cost.
      const rule = ruleFor(MEMORY_RATE, 'fixed-window');
      const map = new Map();
      for (let i = 0; i < keys; i++) map.set(storageKeyBase('rl', `ip:${ipOf(i)}`) + rule.keySuffix, true);
      return { held: map.size, keep: map };
    }
    const rule = ruleFor(MEMORY_RATE, algorithm);
    // A fixed clock: no key expires (nor gets swept) while the fill runs, whatever minute it crosses.
    const now = Date.now();
    const storage = new MemoryStorage({ maxKeys: keys, clock: () => now });
    for (let i = 0; i < keys; i++) {
      // as the guard does per request: identity `ip:<address>`, storageKeyBase, then base + keySuffix
      const base = storageKeyBase('rl', `ip:${ipOf(i)}`);
      storage.check([{ key: base + rule.keySuffix, rule }], 1);
    }
    return { held: storage.size, keep: storage };
  };
  await loadLibrary(); // modules loaded (and cached) before the baseline heap reading
  // heapUsed leaves out typed-array backing stores (MemoryStorage's state), so they are added
  const used = () => {
    const { heapUsed, arrayBuffers } = process.memoryUsage();
    return heapUsed + arrayBuffers;
  };
  gc();
  const before = used();
  const started = performance.now();
  const { held, keep } = await fill();
  const fillSeconds = (performance.now() - started) / 1000;
  gc();
  const after = used();
  if (keep === undefined) throw new Error('nothing measured'); // and `keep` stays reachable until here
  return { kind, algorithm, keys, held, bytesPerKey: (after - before) / held, fillSeconds };
}

function runChild(args, timeoutMs) {
  return new Promise((ok, fail) => {
    execFile(process.execPath, ['--expose-gc', '--max-old-space-size=8192', here, ...args], { timeout: timeoutMs, maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      if (error) return fail(new Error(`${args.join(' ')}: ${error.message} ${stderr}`));
      ok(JSON.parse(stdout.trim().split('\n').pop()));
    });
  });
}

async function redisMemoryUsage(lib, redis, settings) {
  const { RedisStorage, ALGORITHM_NAMES, storageKeyBase, ruleFor } = lib;
  const { admin, url } = redis;
  const sample = settings.redisSample;
  const average = async (keys) => {
    let total = 0;
    for (const key of keys) total += Number(await admin.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));
    return total / keys.length;
  };
  const rows = {};
  const storage = new RedisStorage({ url, blockCache: false });
  await storage.init();
  for (const algorithm of ALGORITHM_NAMES) {
    await admin.flushdb();
    const rule = ruleFor(MEMORY_RATE, algorithm);
    const keys = Array.from({ length: sample }, (_, i) => storageKeyBase('rl', identity15(i)) + rule.keySuffix);
    await Promise.all(keys.map((key) => storage.check([{ key, rule }], 1)));
    rows[algorithm] = { bytesPerKey: await average(keys), type: await admin.type(keys[0]), encoding: await admin.object('ENCODING', keys[0]), key: keys[0] };
  }
  // sliding-window-log: one key after 100 checks (a full 100/minute log)
  await admin.flushdb();
  const logRule = ruleFor(MEMORY_RATE, 'sliding-window-log');
  const logKey = storageKeyBase('rl', identity15(0)) + logRule.keySuffix;
  let allowed = 0;
  for (let i = 0; i < 100; i++) if ((await storage.check([{ key: logKey, rule: logRule }], 1)).allowed) allowed++;
  const logFull = { bytes: await average([logKey]), entries: await admin.llen(logKey), allowed, encoding: await admin.object('ENCODING', logKey) };
  await storage.close();

  await admin.flushdb();
  const client = await connectedClient(url, { enableAutoPipelining: true });
  const limiter = new RateLimiterRedis({ storeClient: client, points: 100, duration: 60, keyPrefix: 'rl' });
  const rlfKeys = Array.from({ length: sample }, (_, i) => `{${identity15(i)}}:${BUCKET}`);
  await Promise.all(rlfKeys.map((key) => limiter.consume(key)));
  rows.rlf = {
    bytesPerKey: await average(rlfKeys.map((key) => `rl:${key}`)),
    type: await admin.type(`rl:${rlfKeys[0]}`),
    encoding: await admin.object('ENCODING', `rl:${rlfKeys[0]}`),
    key: `rl:${rlfKeys[0]}`,
  };
  await client.quit();
  await admin.flushdb();
  return { rows, logFull };
}

async function memoryScenario(lib, redis, settings) {
  const heap = {};
  const jobs = [...lib.ALGORITHM_NAMES.map((a) => ['ours', a]), ['rlf', 'fixed window (rlf)'], ['map', 'baseline']];
  for (const [kind, algorithm] of jobs) {
    process.stderr.write(`  heap: ${kind} ${algorithm}, ${settings.memoryKeys} keys\n`);
    heap[`${kind}:${algorithm}`] = await runChild(['__heap', kind, algorithm, String(settings.memoryKeys)], 180_000);
  }
  const redisUsage = redis ? await redisMemoryUsage(lib, redis, settings) : undefined;
  return { heap, redisUsage };
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const fmt = (n) => (n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(n >= 10 ? 1 : 2));
const table = (header, rows) =>
  [`| ${header.join(' | ')} |`, `|${header.map((h, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');

/** The label of a RateLimiterRedis contender: its client set-up. */
const rlfRedisLabel = (c) => `RateLimiterRedis (${c.autoPipelining ? 'auto-pipelining' : 'ioredis defaults'})`;

/**
 * The medians (set on each contender as `median`) and the comparisons of the report, ours / theirs:
 * { ours, theirs, label, factor (the target, or undefined), value (ratio of the medians),
 *   perRound (ratios round by round), pass (value ≥ factor; undefined without a target) }.
 * The markdown (throughputReport) and the runner's rows (throughputRows) both show these.
 */
function throughputComparisons(contenders) {
  for (const c of contenders) c.median = median(c.runs.map((r) => r.rate));
  const find = (name, algorithm) => contenders.find((c) => c.name === name && (algorithm === undefined || c.algorithm === algorithm));
  const rlfMemory = find('RateLimiterMemory');
  const rlfRedis = contenders.find((c) => c.name === 'RateLimiterRedis' && c.autoPipelining);
  const rlfRedisDefault = contenders.find((c) => c.name === 'RateLimiterRedis' && !c.autoPipelining);
  const comparisons = [];
  const ratio = (ours, theirs, factor, label) => {
    const value = ours.median / theirs.median;
    const perRound = ours.runs.map((r, i) => r.rate / theirs.runs[i].rate);
    comparisons.push({ ours, theirs, label, factor, value, perRound, pass: factor === undefined ? undefined : value >= factor });
  };
  for (const c of contenders.filter((c) => c.name === 'MemoryStorage')) ratio(c, rlfMemory, 1, 'RateLimiterMemory');
  if (rlfRedis || rlfRedisDefault) {
    // The target is against whichever rlf set-up was faster in this run; the other is shown too.
    const [best, other] = [rlfRedis, rlfRedisDefault].filter(Boolean).sort((a, b) => b.median - a.median);
    for (const c of contenders.filter((c) => c.name === 'RedisStorage')) ratio(c, best, 2, `${rlfRedisLabel(best)}, the faster rlf set-up`);
    if (other) {
      for (const algorithm of ['fixed-window', 'gcra']) {
        const c = find('RedisStorage', algorithm);
        if (c) ratio(c, other, undefined, rlfRedisLabel(other));
      }
    }
  }
  return comparisons;
}

function throughputReport(contenders, settings, comparisons = throughputComparisons(contenders)) {
  const out = [];
  out.push(
    `### Storage alone: checks/s, ${settings.concurrency} in flight, ${settings.keys.toLocaleString('en-US')} keys round-robin, ` +
      `${settings.durationMs / 1000} s × ${settings.rounds} interleaved rounds (median)`,
  );
  out.push('');
  const rows = contenders.map((c) => {
    const rates = c.runs.map((r) => r.rate);
    const med = c.median;
    const flags = c.runs.reduce((s, r) => s + r.errors, 0);
    const denied = c.runs.reduce((s, r) => s + r.denied, 0);
    return [
      `${c.name}`,
      c.algorithm,
      `**${fmt(med)}**`,
      `${fmt(Math.min(...rates))} – ${fmt(Math.max(...rates))}`,
      `${((100 * (Math.max(...rates) - Math.min(...rates))) / med).toFixed(0)}%`,
      fmt(median(c.runs.map((r) => r.nodeCpuUsPerCheck))),
      c.group === 'redis' ? fmt(median(c.runs.map((r) => r.redisCpuUsPerCheck))) : '–',
      flags || denied ? `${flags} errors, ${denied} denied${flags ? ` (${c.runs.find((r) => r.firstError)?.firstError})` : ''}` : '0',
    ];
  });
  out.push(table(['storage', 'algorithm', 'checks/s', 'min – max', 'spread', 'node CPU µs/check', 'redis CPU µs/check', 'errors/denials'], rows));
  out.push('');

  const ratioRows = comparisons.map(({ ours, label, factor, value, perRound, pass }) => [
    `${ours.name} ${ours.algorithm} / ${label}`,
    `**${value.toFixed(2)}×**`,
    `${Math.min(...perRound).toFixed(2)} – ${Math.max(...perRound).toFixed(2)}`,
    factor === undefined ? '–' : `≥ ${factor}×`,
    factor === undefined ? '–' : pass ? 'PASS' : 'FAIL',
  ]);
  out.push('Ratios (median ours / median theirs; per-round ratios shown as a range). Targets: MemoryStorage ≥ RateLimiterMemory; RedisStorage ≥ 2 × RateLimiterRedis in its faster set-up of the run (headline: fixed-window and gcra). Reported, not asserted.');
  out.push('');
  out.push(table(['comparison', 'ratio', 'per-round', 'target', 'result'], ratioRows));
  out.push('');
  return out.join('\n');
}

const redisTargetCell = (bytes) => `${bytes <= REDIS_FIXED_WINDOW_TARGET ? 'PASS' : 'FAIL'} (≤ ${REDIS_FIXED_WINDOW_TARGET})`;

function memoryReport(memory, settings) {
  const { heap, redisUsage } = memory;
  const out = [];
  out.push(`### Memory per key: heap after ${settings.memoryKeys.toLocaleString('en-US')} keys (fresh child, --expose-gc, heapUsed + arrayBuffers delta / keys), Redis MEMORY USAGE (avg of ${settings.redisSample} keys, one check each, rate ${MEMORY_RATE})`);
  out.push('');
  const rows = [];
  for (const [key, m] of Object.entries(heap)) {
    const [kind, algorithm] = key.split(':');
    const target = kind === 'ours' && (algorithm === 'fixed-window' || algorithm === 'gcra');
    const redisRow = redisUsage && (kind === 'ours' ? redisUsage.rows[algorithm] : kind === 'rlf' ? redisUsage.rows.rlf : undefined);
    rows.push([
      kind === 'ours' ? 'MemoryStorage' : kind === 'rlf' ? 'RateLimiterMemory / RateLimiterRedis' : 'baseline: Map<key, true>',
      algorithm,
      `**${Math.round(m.bytesPerKey)}**`,
      m.held.toLocaleString('en-US'),
      `${m.fillSeconds.toFixed(1)} s`,
      target ? (m.bytesPerKey <= 150 ? 'PASS (≤ 150)' : 'FAIL (≤ 150)') : '–',
      redisRow ? `${Math.round(redisRow.bytesPerKey)} (${redisRow.type}, ${redisRow.encoding})` : '–',
      redisRow && kind === 'ours' && algorithm === 'fixed-window' ? redisTargetCell(redisRow.bytesPerKey) : '–',
    ]);
  }
  out.push(table(['storage', 'algorithm', 'heap B/key', 'keys held', 'fill time', 'target', 'Redis MEMORY USAGE B/key', 'Redis target'], rows));
  out.push('');
  if (redisUsage) {
    const { logFull } = redisUsage;
    out.push(
      `Redis sliding-window-log, one key after 100 checks at ${MEMORY_RATE}: **${Math.round(logFull.bytes)} B** ` +
        `(${logFull.entries} entries, ${logFull.allowed} allowed, encoding ${logFull.encoding}).`,
    );
    out.push('');
  }
  out.push(
    'Keys: storageKeyBase + rule.keySuffix, built once per client as the guard does, for the route `ItemsController.findAll` without a `bucket`, ' +
      'so under its route id: heap `rl:{ip:10.x.y.z}:<id>:<code><window>`; Redis a 15-character identity' +
      (redisUsage ? `, e.g. \`${redisUsage.rows['fixed-window'].key}\` (RateLimiterRedis: \`${redisUsage.rows.rlf.key}\`)` : '') +
      '. The baseline row is the heap key strings alone in a Map.',
  );
  out.push('');
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Rows for the HTTP runner's one table (BENCH_ROWS_FILE)
// ---------------------------------------------------------------------------------------------
//
// The Row shape of bench/src/harness/report.ts: { scenario, contender, throughput?, vsBare?, p50?,
// p99?, p999?, redis?, spread?, target?, pass?, notes? }, every cell a string but pass (boolean).
// Here: throughput holds the result (checks/s, B/key), vsBare the ratio to the reference it names,
// target/pass the targets of the markdown above; no latency nor Redis-call cells (not measured).

const int = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—');
const times = (n) => (Number.isFinite(n) ? `${n.toFixed(2)}×` : '—');
const range = (values) => {
  const [low, high] = [Math.min(...values).toFixed(2), Math.max(...values).toFixed(2)];
  return low === high ? low : `${low}–${high}`;
};
const notes = (...parts) => parts.filter(Boolean).join('; ');

/** One row per contender: median checks/s, and on ours the comparisons of throughputComparisons. */
function throughputRows(contenders, comparisons, settings) {
  const scenario = `Storage alone · ${settings.concurrency} checks in flight over ${int(settings.keys)} keys, no HTTP`;
  const contenderName = (c) =>
    c.name === 'RateLimiterRedis' ? rlfRedisLabel(c) : c.name === 'RateLimiterMemory' ? c.name : `${c.name} ${c.algorithm}`;
  const targetOf = (c) => comparisons.find((x) => x.ours === c && x.factor !== undefined);
  const references = new Set(comparisons.filter((x) => x.factor !== undefined).map((x) => x.theirs));
  return contenders.map((c) => {
    const rates = c.runs.map((r) => r.rate);
    const errors = c.runs.reduce((s, r) => s + r.errors, 0);
    const denied = c.runs.reduce((s, r) => s + r.denied, 0);
    const row = {
      scenario,
      contender: contenderName(c),
      throughput: `${int(c.median)} checks/s`,
      spread: `${((100 * (Math.max(...rates) - Math.min(...rates))) / c.median).toFixed(1)}%`,
    };
    const target = targetOf(c);
    if (target) {
      const reference = contenderName(target.theirs);
      row.vsBare = `${times(target.value)} ${reference}`;
      row.target = `≥ ${target.factor} × ${c.name === 'RedisStorage' ? 'RateLimiterRedis, its faster set-up' : reference}`;
      row.pass = target.pass;
    }
    const others = comparisons.filter((x) => x.ours === c && x.factor === undefined);
    row.notes = notes(
      c.name === 'RateLimiterRedis' && references.has(c) && 'reference of the RedisStorage target (the faster rlf set-up)',
      c.name === 'RateLimiterRedis' && !references.has(c) && 'the slower rlf set-up in this run',
      c.name === 'RateLimiterMemory' && 'reference of the MemoryStorage target',
      target && `per-round ratio ${range(target.perRound)}`,
      ...others.map((x) => `${times(x.value)} ${contenderName(x.theirs)}, per round ${range(x.perRound)}`),
      `node CPU ${fmt(median(c.runs.map((r) => r.nodeCpuUsPerCheck)))} µs/check`,
      c.group === 'redis' && `Redis CPU ${fmt(median(c.runs.map((r) => r.redisCpuUsPerCheck)))} µs/check`,
      errors > 0 && `⚠ ${errors} errors (${c.runs.find((r) => r.firstError)?.firstError})`,
      denied > 0 && `⚠ ${denied} denied`,
    );
    return row;
  });
}

/** Heap bytes per key (MemoryStorage per algorithm, RateLimiterMemory, the Map baseline), then Redis MEMORY USAGE per key. */
function memoryRows(memory, settings) {
  const { heap, redisUsage } = memory;
  const rows = [];
  const heapScenario = `Memory · heap per key after ${int(settings.memoryKeys)} keys`;
  const rlfHeap = heap['rlf:fixed window (rlf)']?.bytesPerKey;
  for (const [key, m] of Object.entries(heap)) {
    const [kind, algorithm] = key.split(':');
    const row = {
      scenario: heapScenario,
      contender: kind === 'ours' ? `MemoryStorage ${algorithm}` : kind === 'rlf' ? 'RateLimiterMemory' : 'Map<key, true> (baseline)',
      throughput: `${int(m.bytesPerKey)} B/key`,
    };
    if (kind === 'ours' && rlfHeap) row.vsBare = `${times(m.bytesPerKey / rlfHeap)} RateLimiterMemory`;
    if (kind === 'ours' && (algorithm === 'fixed-window' || algorithm === 'gcra')) {
      row.target = '≤ 150 B/key';
      row.pass = m.bytesPerKey <= 150;
    }
    row.notes = notes(
      kind === 'map' && 'reference, not a limiter: the same key strings alone in a Map',
      `filled in ${m.fillSeconds.toFixed(1)} s`,
      m.held !== settings.memoryKeys && `⚠ only ${int(m.held)} of ${int(settings.memoryKeys)} keys held`,
    );
    rows.push(row);
  }
  if (redisUsage) {
    const redisScenario = `Memory · Redis MEMORY USAGE per key (avg of ${int(settings.redisSample)} keys of 15-character identities, one check each)`;
    const rlf = redisUsage.rows.rlf;
    for (const [algorithm, r] of Object.entries(redisUsage.rows)) {
      const ours = algorithm !== 'rlf';
      rows.push({
        scenario: redisScenario,
        contender: ours ? `RedisStorage ${algorithm}` : 'RateLimiterRedis',
        throughput: `${int(r.bytesPerKey)} B/key`,
        vsBare: ours && rlf ? `${times(r.bytesPerKey / rlf.bytesPerKey)} RateLimiterRedis` : undefined,
        ...(algorithm === 'fixed-window' ? { target: `≤ ${REDIS_FIXED_WINDOW_TARGET} B/key`, pass: r.bytesPerKey <= REDIS_FIXED_WINDOW_TARGET } : {}),
        notes: `Redis type ${r.type} (${r.encoding}), e.g. ${r.key}`,
      });
    }
    const { logFull } = redisUsage;
    rows.push({
      scenario: redisScenario,
      contender: 'RedisStorage sliding-window-log, 1 full key',
      throughput: `${int(logFull.bytes)} B`,
      notes: `one key after 100 checks at ${MEMORY_RATE}: ${logFull.entries} entries, ${logFull.allowed} allowed, encoding ${logFull.encoding}`,
    });
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

export function defaultSettings(overrides = {}) {
  return {
    durationMs: num('STORAGE_DURATION', 3) * 1000,
    rounds: num('STORAGE_ROUNDS', 5),
    warmupMs: num('STORAGE_WARMUP', 0.5) * 1000,
    concurrency: num('STORAGE_CONCURRENCY', 256),
    keys: num('STORAGE_KEYS', 10_000),
    memoryKeys: num('STORAGE_MEMORY_KEYS', 1_000_000),
    redisSample: num('STORAGE_REDIS_SAMPLE', 1000),
    scenarios: (process.env.STORAGE_SCENARIOS ?? 'throughput,memory').split(','),
    out: resolve(root, process.env.STORAGE_OUT ?? 'bench/results-storage.md'),
    timeoutMs: num('STORAGE_TIMEOUT', 900) * 1000,
    rowsFile: process.env.BENCH_ROWS_FILE || undefined,
    ...overrides,
  };
}

/** Runs the selected scenarios; returns the markdown (also written to `settings.out`) and raw results. */
export async function runStorageBench(overrides = {}) {
  const settings = defaultSettings(overrides);
  const lib = await loadLibrary();
  const startedAt = new Date();
  const loadBefore = loadavg();
  let redis;
  const watchdog = setTimeout(() => {
    process.stderr.write(`storage-bench: over ${settings.timeoutMs / 1000} s, giving up\n`);
    redis?.stop().finally(() => process.exit(2));
  }, settings.timeoutMs);
  watchdog.unref();
  const stopOnSignal = () => redis?.stop().finally(() => process.exit(130));
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  try {
    redis = await startRedis();
    const sections = [];
    const results = {};
    const rows = [];
    if (settings.scenarios.includes('throughput')) {
      process.stderr.write('storage-bench: throughput\n');
      results.throughput = await throughputScenario(lib, redis, settings);
      const comparisons = throughputComparisons(results.throughput);
      sections.push(throughputReport(results.throughput, settings, comparisons));
      rows.push(...throughputRows(results.throughput, comparisons, settings));
    }
    if (settings.scenarios.includes('memory')) {
      process.stderr.write('storage-bench: memory\n');
      results.memory = await memoryScenario(lib, redis, settings);
      sections.push(memoryReport(results.memory, settings));
      rows.push(...memoryRows(results.memory, settings));
    }
    const seconds = (Date.now() - startedAt.getTime()) / 1000;
    const header = [
      '## Storage benchmark (`bench/storage-bench.mjs`)',
      '',
      `${startedAt.toISOString()}, ${seconds.toFixed(0)} s. Node ${process.version}, Redis ${redis.version} (private, localhost, ` +
        `no persistence), ${cpus().length} CPUs (${cpus()[0]?.model?.trim()}), load average ${loadBefore[0].toFixed(2)} before / ` +
        `${loadavg()[0].toFixed(2)} after. rate-limiter-flexible ${createRequire(import.meta.url)('rate-limiter-flexible/package.json').version}, ` +
        `ioredis ${createRequire(resolve(root, 'package.json'))('ioredis/package.json').version}. Library: ${LIB_DIR.replace(root + '/', '')}.`,
      '',
    ].join('\n');
    const markdown = `${header}\n${sections.join('\n')}`;
    writeFileSync(settings.out, markdown);
    // The HTTP runner (bench/src/run.ts) passes BENCH_ROWS_FILE: the same results as rows of its one table.
    if (settings.rowsFile) writeFileSync(settings.rowsFile, `${JSON.stringify(rows, null, 2)}\n`);
    return { markdown, rows, results, settings };
  } finally {
    clearTimeout(watchdog);
    process.off('SIGINT', stopOnSignal);
    process.off('SIGTERM', stopOnSignal);
    await redis?.stop();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === here) {
  if (process.argv[2] === '__heap') {
    const [, , , kind, algorithm, keys] = process.argv;
    console.log(JSON.stringify(await measureHeapChild(kind, algorithm, Number(keys))));
    process.exit(0);
  }
  try {
    const { markdown } = await runStorageBench();
    process.stdout.write(`${markdown}\n`);
    process.exit(0);
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
}
