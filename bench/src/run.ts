// The side-by-side benchmark suite: `npm run bench` at the repository root.
//
// HTTP scenarios A, B and C (below), P (the limiter's share of the app's CPU, from a profile of the app), then the storage scenarios' hook, then ONE markdown table,
// printed and written to bench/results.md. Every app runs in its own process, started fresh for
// each round and warmed up first; the load comes from this process over loopback; contenders are
// interleaved round by round (A B C … A B C …) so that drift hits them all alike; medians are reported.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONTENDERS, killAllApps, startApp, type Contender } from './harness/apps.js';
import { paced, saturate, type LoadResult, type PacedResult } from './harness/load.js';
import { foreignLoad, watchCpu, type CpuShares } from './harness/cpu.js';
import { PrivateRedis, type CommandDelta } from './harness/redis.js';
import { limiterFrames, limiterShare, mergeTops, unusedFeatureFrames, type FunctionShare, type ProfileShare } from './harness/profile.js';
import { fmt, markdownTable, type Row } from './harness/report.js';
import { median, spread } from './harness/stats.js';

const BENCH_DIR = fileURLToPath(new URL('..', import.meta.url));
const REPO_DIR = join(BENCH_DIR, '..');
/** The copy of dist/esm (the package's ES module build) that every app of this run loads (see single-nest-hooks.ts). */
const LIB_SNAPSHOT = join(BENCH_DIR, 'dist/lib-snapshot');

function numberEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got "${raw}"`);
  return value;
}

function countEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name} must be a whole number ≥ 0, got "${raw}"`);
  return value;
}

function listEnv(name: string, all: readonly string[]): string[] {
  const raw = process.env[name];
  if (!raw) return [...all];
  const picked = raw.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = picked.filter((p) => !all.includes(p));
  if (unknown.length) throw new Error(`${name}: unknown ${unknown.join(', ')} (expected some of ${all.join(', ')})`);
  return picked;
}

const settings = {
  rounds: Math.round(numberEnv('BENCH_ROUNDS', 5)),
  durationSec: numberEnv('BENCH_DURATION', 5),
  warmupSec: numberEnv('BENCH_WARMUP', 1.5),
  connections: Math.round(numberEnv('BENCH_CONNECTIONS', 50)),
  keys: Math.round(numberEnv('BENCH_KEYS', 10_000)),
  hotLimit: Math.round(numberEnv('BENCH_HOT_LIMIT', 10)),
  pacedConnections: Math.round(numberEnv('BENCH_PACED_CONNECTIONS', 128)),
  fixedRate: process.env.BENCH_FIXED_RATE ? numberEnv('BENCH_FIXED_RATE', 1) : undefined,
  scenarios: listEnv('BENCH_SCENARIOS', ['A', 'B', 'C', 'P']),
  /** Scenario P: V8's sampling interval, µs (`--cpu-prof-interval`). */
  profileIntervalUs: Math.round(numberEnv('BENCH_PROFILE_INTERVAL', 100)),
  /** Scenario P: where to keep the profiles (removed after reading when unset). */
  profileDir: process.env.BENCH_PROFILE_DIR || undefined,
  contenders: listEnv('BENCH_CONTENDERS', CONTENDERS.map((c) => c.name)),
  /** Longest wait, before a measurement, for other processes to leave the CPU. */
  quietTimeoutSec: numberEnv('BENCH_QUIET_TIMEOUT', 120),
  /** Measurements of a round taken again when other processes competed for the CPU during it. */
  retries: countEnv('BENCH_RETRIES', 2),
};
const HOT_KEY = 'hot-client';
const PING_FLOOR = 'bare+redis-ping';
const GUARD_FLOOR = 'bare+guard';
const B_CONTENDERS = ['bare', GUARD_FLOOR, PING_FLOOR, 'ours-memory', 'ours-redis'];
/** A compares with an Express bare: the Fastify contender runs in P only. */
const A_CONTENDERS = CONTENDERS.filter((c) => c.platform !== 'fastify').map((c) => c.name);
/** Scenario C has no use for the references: they do not limit. */
const C_CONTENDERS = A_CONTENDERS.filter((name) => name !== 'bare' && name !== PING_FLOOR && name !== GUARD_FLOOR);
/** Scenario P: every limiter, ours on Fastify too, and the PING reference (the ioredis floor of a limiter on Redis). */
const P_CONTENDERS = [
  PING_FLOOR,
  'ours-memory',
  'ours-memory-advisor',
  'ours-memory-fastify',
  'ours-redis',
  'ours-redis-advisor',
  'throttler-memory',
  'throttler-redis',
  'rlf-memory',
  'rlf-redis',
];
/** Issue 21: the limit advisor on adds at most 0.3 points to the share of the same app without it. */
const ADVISOR_COST: Record<string, { base: string; max: number }> = {
  'ours-memory-advisor': { base: 'ours-memory', max: 0.003 },
  'ours-redis-advisor': { base: 'ours-redis', max: 0.003 },
};
const contender = (name: string) => CONTENDERS.find((c) => c.name === name)!;
/**
 * Checks Redis decided in an interval. The competitors run one script per check; ours runs one
 * script per batch of checks, whose every check reads its state with one GET (the bench's apps use
 * the default fixed window), so for ours that read is what counts.
 */
function checksInRedis(c: { app: string }, redis: CommandDelta): number {
  if (c.app !== 'ours') return redis.scripts;
  return redis.byCommand.get ?? 0;
}
const selected = (names: readonly string[]) => names.filter((n) => settings.contenders.includes(n)).map(contender);

// ---------------------------------------------------------------------------------------------
// Rounds

interface Measured<T> {
  result: T;
  /** Commands the app sent to Redis during the measured run (FLUSHALL and warm-up excluded). */
  redis: CommandDelta;
  /** Keys in Redis after the run. */
  dbSize: number;
  /** Where the CPU went during the measured run (percent of one core). */
  cpu: CpuShares;
  /** Scenario P: the limiter's share of the app's busy samples during the measured run. */
  profile?: ProfileShare;
}

type Rounds<T> = Map<string, Measured<T>[]>;

/** CLOCK_MONOTONIC in µs: the clock of V8's profile timestamps on Linux (see harness/profile.ts). */
const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);
let profileCount = 0;

/**
 * One measurement: FLUSHALL (Redis contenders), a fresh app, warm-up, the measured run, app stopped.
 * With `profile`, the app runs under `node --cpu-prof`, which writes its profile when the app
 * leaves through process.exit (its SIGTERM handler, see apps/common.ts); the samples of the
 * measured run are then read from it.
 */
async function measureOnce<T extends LoadResult>(
  c: Contender,
  redis: PrivateRedis,
  warm: (port: number) => Promise<unknown>,
  measure: (port: number) => Promise<T>,
  profile = false,
): Promise<Measured<T>> {
  if (c.storage === 'redis') await redis.flushAll();
  let profileDir: string | undefined;
  if (profile) {
    if (settings.profileDir) {
      profileDir = join(settings.profileDir, `${String(++profileCount).padStart(3, '0')}-${c.name}`);
      rmSync(profileDir, { recursive: true, force: true });
      mkdirSync(profileDir, { recursive: true });
    } else {
      profileDir = mkdtempSync(join(tmpdir(), `bench-profile-${c.name}-`));
    }
  }
  const nodeArgs = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-interval=${settings.profileIntervalUs}`] : [];
  try {
    let measured: Measured<T>;
    let window: [number, number] = [0, 0];
    const app = await startApp(c, { REDIS_URL: redis.url, BENCH_HOT_LIMIT: String(settings.hotLimit), BENCH_LIB_DIR: LIB_SNAPSHOT }, { nodeArgs });
    try {
      await warm(app.port);
      const before = await redis.commandCalls();
      const cpu = watchCpu(app.pid, redis.pid);
      const from = monotonicUs();
      const result = await measure(app.port);
      window = [from, monotonicUs()];
      const shares = cpu.stop();
      const after = await redis.commandCalls();
      measured = { result, redis: PrivateRedis.delta(before, after), dbSize: await redis.dbSize(), cpu: shares };
    } finally {
      await app.stop();
    }
    if (profileDir) {
      const libDirs = [LIB_SNAPSHOT, join(REPO_DIR, 'dist/esm')];
      measured.profile = limiterShare(profileDir, limiterFrames(c, libDirs), ...window, unusedFeatureFrames(c, libDirs));
    }
    return measured;
  } finally {
    if (profileDir && !settings.profileDir) rmSync(profileDir, { recursive: true, force: true });
  }
}

/**
 * Waits (at most BENCH_QUIET_TIMEOUT) until processes outside the benchmark use less than
 * FOREIGN_CPU_LIMIT of a core; also lets the sockets and the process of the last run settle.
 */
async function untilQuiet(redis: PrivateRedis): Promise<void> {
  const deadline = Date.now() + settings.quietTimeoutSec * 1_000;
  let warned = false;
  for (;;) {
    const load = await foreignLoad(300, [redis.pid]);
    if (load <= FOREIGN_CPU_LIMIT || Number.isNaN(load)) return;
    if (Date.now() > deadline) {
      log(`  other processes still use ${Math.round(load)}% of a core after ${settings.quietTimeoutSec} s; measuring anyway`);
      return;
    }
    if (!warned) log(`  other processes use ${Math.round(load)}% of a core; waiting for quiet (at most ${settings.quietTimeoutSec} s)`);
    warned = true;
  }
}

/**
 * `rounds` × every contender, interleaved. Each measurement: wait until the machine is quiet,
 * FLUSHALL (Redis contenders), a fresh app process, `warm`, then `measure` between two INFO
 * commandstats snapshots, then the app stops. A measurement during which other processes took
 * more than FOREIGN_CPU_LIMIT of a core is taken again (BENCH_RETRIES times at most); a failed one
 * is reported and skipped: the table then shows fewer rounds for that contender.
 */
async function runRounds<T extends LoadResult>(
  label: string,
  redis: PrivateRedis,
  contenders: readonly Contender[],
  warm: (port: number) => Promise<unknown>,
  measure: (port: number) => Promise<T>,
  describe: (m: Measured<T>) => string,
  profile = false,
): Promise<Rounds<T>> {
  const rounds: Rounds<T> = new Map(contenders.map((c) => [c.name, []]));
  for (let round = 1; round <= settings.rounds; round++) {
    for (const c of contenders) {
      const name = `${label} round ${round}/${settings.rounds} ${c.name.padEnd(16)}`;
      for (let attempt = 0; attempt <= settings.retries; attempt++) {
        try {
          await untilQuiet(redis);
          const m = await measureOnce(c, redis, warm, measure, profile);
          const noisy = m.cpu.other > FOREIGN_CPU_LIMIT;
          log(`${name} ${describe(m)}  ${cpuText(m.cpu)}${noisy ? '  ⚠ other processes competed' : ''}`);
          if (noisy && attempt < settings.retries) {
            log(`${name} measuring again`);
            continue;
          }
          rounds.get(c.name)!.push(m);
        } catch (error) {
          log(`${name} FAILED: ${(error as Error).message}`);
        }
        break;
      }
    }
  }
  return rounds;
}

const log = (line: string) => console.log(line);
/** The main number of every round, for the appendix of results.md. */
const roundLines: string[] = [];
function recordRounds<T>(scenario: string, what: string, rounds: Rounds<T>, pick: (m: Measured<T>) => number, show: (n: number) => string) {
  for (const [name, list] of rounds) roundLines.push(`| ${scenario} | ${name} | ${what} | ${list.map((m) => show(pick(m))).join(' · ')} |`);
}
const statusText = (status: Record<number, number>) =>
  Object.entries(status)
    .map(([code, n]) => `${n.toLocaleString('en-US')}×${code}`)
    .join(' ');
const medianOf = <T>(list: readonly Measured<T>[], pick: (m: Measured<T>) => number) => median(list.map(pick));
const spreadOf = <T>(list: readonly Measured<T>[], pick: (m: Measured<T>) => number) => spread(list.map(pick));
/** The Redis commands of a run, most frequent first: `evalsha 10,011 · time 10,011 · …`. */
const commandText = (calls: CommandDelta) =>
  Object.entries(calls.byCommand)
    .sort((a, b) => b[1] - a[1])
    .map(([command, n]) => `${command} ${n.toLocaleString('en-US')}`)
    .join(' · ');
const pctText = (n: number) => (Number.isFinite(n) ? `${Math.round(n)}%` : '?');
const cpuText = (cpu: CpuShares) =>
  `cpu: app ${pctText(cpu.app)} gen ${pctText(cpu.generator)} redis ${pctText(cpu.redis)} other ${pctText(cpu.other)}`;
/** Percent of one core that processes outside the benchmark may take before a round is flagged. */
const FOREIGN_CPU_LIMIT = numberEnv('BENCH_FOREIGN_CPU', 10);
const roundsNote = (n: number) => (n < settings.rounds ? `only ${n}/${settings.rounds} rounds succeeded` : '');
const joinNotes = (...notes: (string | false | undefined)[]) => notes.filter(Boolean).join('; ');

/** Responses that were not `expected`, summed over the rounds, and connection errors. */
function anomalies<T extends LoadResult>(list: readonly Measured<T>[], expected: number[]): string {
  let other = 0;
  let errors = 0;
  for (const { result } of list) {
    errors += result.errors;
    for (const [code, n] of Object.entries(result.status)) if (!expected.includes(Number(code))) other += n;
  }
  const foreign = Math.max(...list.map((m) => m.cpu.other));
  return joinNotes(
    other > 0 && `⚠ ${other.toLocaleString('en-US')} unexpected responses`,
    errors > 0 && `⚠ ${errors} connection errors/timeouts`,
    foreign > FOREIGN_CPU_LIMIT && `⚠ other processes took up to ${Math.round(foreign)}% of a core in a round`,
  );
}

// ---------------------------------------------------------------------------------------------
// Scenario A: many clients, none limited

interface ScenarioA {
  rows: Row[];
  bareRps?: number;
}

/** Scenario A's load, which B's probe and P repeat: `/quote`, every API key in turn, closed loop. */
const loadQuotes = (port: number, durationSec: number) =>
  saturate({ port, path: '/quote', keys: settings.keys, connections: settings.connections, durationSec });

async function scenarioA(redis: PrivateRedis): Promise<ScenarioA> {
  const contenders = selected(A_CONTENDERS);
  const rounds = await runRounds(
    'A',
    redis,
    contenders,
    (port) => loadQuotes(port, settings.warmupSec),
    (port) => loadQuotes(port, settings.durationSec),
    ({ result, redis: calls }) =>
      `${fmt.int(result.rps)} req/s  p50 ${fmt.ms(result.latency.p50)}  p99 ${fmt.ms(result.latency.p99)} ms  ` +
      `[${statusText(result.status)}]` + (calls.total ? `  redis ${fmt.per(calls.total / result.responses)}/req: ${commandText(calls)}` : ''),
  );

  recordRounds('A', 'req/s', rounds, (m) => m.result.rps, fmt.int);
  const rps = (name: string) => medianOf(rounds.get(name) ?? [], (m) => m.result.rps);
  const bareRps = rounds.get('bare')?.length ? rps('bare') : undefined;
  const redisCompetitors = ['throttler-redis', 'rlf-redis'].filter((n) => rounds.get(n)?.length);
  const rows = contenders.map((c): Row => {
    const list = rounds.get(c.name)!;
    const row: Row = { scenario: 'A · 10k clients, none limited (saturated)', contender: c.name };
    if (!list.length) return { ...row, notes: 'no successful round' };
    const ratio = bareRps ? rps(c.name) / bareRps : NaN;
    row.throughput = `${fmt.int(rps(c.name))} req/s`;
    row.vsBare = fmt.ratio(ratio);
    row.p50 = fmt.ms(medianOf(list, (m) => m.result.latency.p50));
    row.p99 = fmt.ms(medianOf(list, (m) => m.result.latency.p99));
    row.p999 = fmt.ms(medianOf(list, (m) => m.result.latency.p999));
    if (c.storage === 'redis') {
      const perRequest = medianOf(list, (m) => m.redis.total / m.result.responses);
      const scripts = medianOf(list, (m) => m.redis.scripts / m.result.responses);
      row.redis = `${fmt.per(perRequest)}/req (${fmt.per(scripts)} eval*)`;
    }
    row.spread = fmt.pct(spreadOf(list, (m) => m.result.rps));
    const notes = [roundsNote(list.length), anomalies(list, [200])];
    if (c.storage === 'redis') {
      if (c.name !== PING_FLOOR) notes.push(`${fmt.int(medianOf(list, (m) => m.dbSize))} keys in Redis`);
      // Every request must have been checked in Redis: a limiter that times out and fails open would look fast.
      const unchecked = Math.min(...list.map((m) => checksInRedis(c, m.redis) / m.result.responses));
      if (c.name !== PING_FLOOR && unchecked < 0.99) {
        notes.push(`⚠ as few as ${unchecked.toFixed(2)} checks in Redis per request in a round: requests passed unchecked`);
      }
    }
    if (c.name === PING_FLOOR) notes.unshift('reference, not a limiter: one awaited PING per request');
    if (c.name === GUARD_FLOOR) notes.unshift('reference, not a limiter: a global guard that admits every request');
    if (c.name === 'ours-redis' && rounds.get(PING_FLOOR)?.length) notes.push(`${fmt.ratio(rps(c.name) / rps(PING_FLOOR))} the PING reference`);
    if (c.name === 'ours-memory' && rounds.get(GUARD_FLOOR)?.length) notes.push(`${fmt.ratio(rps(c.name) / rps(GUARD_FLOOR))} the guard reference`);
    const bareRounds = rounds.get('bare') ?? [];
    if (c.app === 'ours' && bareRounds.length === list.length) {
      const paired = list.map((m, i) => m.result.rps / bareRounds[i].result.rps);
      notes.push(`per-round ratio to bare ${Math.min(...paired).toFixed(3)}–${Math.max(...paired).toFixed(3)}`);
    }
    if (c.name === 'ours-memory') {
      row.target = '≥ 0.99 × bare';
      row.pass = ratio >= 0.99;
    }
    if (c.name === 'ours-redis') {
      const best = Math.max(...redisCompetitors.map(rps));
      row.target = '≥ 0.96 × bare and > every competitor on Redis';
      row.pass = ratio >= 0.96 && rps(c.name) > best;
      if (redisCompetitors.length) notes.push(`${fmt.ratio(rps(c.name) / best)} the best competitor on Redis`);
      else notes.push('no competitor on Redis was measured');
    }
    row.notes = joinNotes(...notes);
    return row;
  });
  return { rows, bareRps };
}

// ---------------------------------------------------------------------------------------------
// Scenario B: latency at a fixed rate, half of bare's saturation

async function scenarioB(redis: PrivateRedis, bareRps: number | undefined): Promise<Row[]> {
  const contenders = selected(B_CONTENDERS);
  let rate = settings.fixedRate;
  if (rate === undefined) {
    if (bareRps === undefined) {
      log('B needs bare saturation req/s; measuring it once (scenario A was not run)');
      await untilQuiet(redis);
      const probe = await measureOnce(contender('bare'), redis, (port) => loadQuotes(port, settings.warmupSec), (port) => loadQuotes(port, settings.durationSec));
      bareRps = probe.result.rps;
      log(`B bare saturation: ${fmt.int(bareRps)} req/s  ${cpuText(probe.cpu)}`);
    }
    rate = Math.round(bareRps / 2);
  }
  const fixedRate = rate;
  log(`B fixed rate: ${fmt.int(fixedRate)} req/s on ${settings.pacedConnections} connections`);
  const load = (port: number, durationSec: number) =>
    paced({ port, path: '/quote', keys: settings.keys, connections: settings.pacedConnections, durationSec, rate: fixedRate });
  const rounds = await runRounds<PacedResult>(
    'B',
    redis,
    contenders,
    (port) => load(port, settings.warmupSec),
    (port) => load(port, settings.durationSec),
    ({ result }) =>
      `${fmt.int(result.rps)} req/s  p50 ${fmt.ms(result.latency.p50)}  p99 ${fmt.ms(result.latency.p99)}  p99.9 ${fmt.ms(result.latency.p999)} ms` +
      `  late ${result.late}  [${statusText(result.status)}]`,
  );

  recordRounds('B', 'p99 ms', rounds, (m) => m.result.latency.p99, fmt.ms);
  const p99 = (name: string) => medianOf(rounds.get(name) ?? [], (m) => m.result.latency.p99);
  const bareP99 = rounds.get('bare')?.length ? p99('bare') : NaN;
  return contenders.map((c): Row => {
    const list = rounds.get(c.name)!;
    const row: Row = { scenario: `B · fixed rate ${fmt.int(fixedRate)} req/s (½ bare)`, contender: c.name };
    if (!list.length) return { ...row, notes: 'no successful round' };
    const added = p99(c.name) - bareP99;
    row.throughput = `${fmt.int(medianOf(list, (m) => m.result.rps))} req/s`;
    if (c.name !== 'bare') row.vsBare = Number.isFinite(added) ? `p99 ${added >= 0 ? '+' : ''}${added.toFixed(2)} ms` : '—';
    row.p50 = fmt.ms(medianOf(list, (m) => m.result.latency.p50));
    row.p99 = fmt.ms(p99(c.name));
    row.p999 = fmt.ms(medianOf(list, (m) => m.result.latency.p999));
    if (c.storage === 'redis') row.redis = `${fmt.per(medianOf(list, (m) => m.redis.total / m.result.responses))}/req`;
    row.spread = `p99 ${fmt.pct(spreadOf(list, (m) => m.result.latency.p99))}`;
    const late = list.reduce((sum, m) => sum + m.result.late, 0);
    row.notes = joinNotes(
      roundsNote(list.length),
      anomalies(list, [200]),
      late > 0 && `⚠ ${late.toLocaleString('en-US')} requests waited for a free connection`,
    );
    if (c.name === PING_FLOOR) row.notes = joinNotes('reference, not a limiter: one awaited PING per request', row.notes);
    if (c.name === GUARD_FLOOR) row.notes = joinNotes('reference, not a limiter: a global guard that admits every request', row.notes);
    if (c.name === 'ours-redis') {
      row.target = 'p99 ≤ bare p99 + 1 ms';
      row.pass = added <= 1;
      if (rounds.get(PING_FLOOR)?.length) {
        const overPing = p99(c.name) - p99(PING_FLOOR);
        row.notes = joinNotes(row.notes, `p99 ${overPing >= 0 ? '+' : ''}${overPing.toFixed(2)} ms vs the PING reference`);
      }
    }
    return row;
  });
}

// ---------------------------------------------------------------------------------------------
// Scenario C: one abusive client far past a small limit

/**
 * Waits, if need be, for the next minute to start, so that the next `seconds` fall in one minute.
 * The hot limit is per minute and fixed windows are aligned to the epoch: a measured run that
 * crossed into a new window would see a fresh budget (requests allowed, and a Redis call for
 * each request in flight when the old window's block ran out) instead of a client that is blocked.
 */
async function insideOneMinute(seconds: number): Promise<void> {
  const intoMinute = Date.now() % 60_000;
  if (intoMinute + seconds * 1_000 > 60_000) await sleep(60_000 - intoMinute + 100);
}

async function scenarioC(redis: PrivateRedis, bareRps: number | undefined): Promise<Row[]> {
  const contenders = selected(C_CONTENDERS);
  const load = (port: number, durationSec: number) =>
    saturate({ port, path: '/hot', keys: HOT_KEY, connections: settings.connections, durationSec });
  const denied = (r: LoadResult) => r.status[429] ?? 0;
  const rounds = await runRounds(
    'C',
    redis,
    contenders,
    async (port) => {
      await insideOneMinute(settings.warmupSec + settings.durationSec + 1);
      return load(port, settings.warmupSec);
    },
    (port) => load(port, settings.durationSec),
    ({ result, redis: calls }) =>
      `${fmt.int(denied(result) / result.durationSec)} 429/s  p99 ${fmt.ms(result.latency.p99)} ms  ` +
      `[${statusText(result.status)}]  redis ${calls.total.toLocaleString('en-US')} calls (${calls.scripts.toLocaleString('en-US')} eval*)` +
      (calls.total ? `: ${commandText(calls)}` : ''),
  );

  recordRounds('C', '429/s', rounds, (m) => denied(m.result) / m.result.durationSec, fmt.int);
  recordRounds('C', 'Redis calls', rounds, (m) => m.redis.total, fmt.int);
  return contenders.map((c): Row => {
    const list = rounds.get(c.name)!;
    const row: Row = { scenario: `C · 1 client flooding a ${settings.hotLimit}/minute limit`, contender: c.name };
    if (!list.length) return { ...row, notes: 'no successful round' };
    const deniedPerSec = medianOf(list, (m) => denied(m.result) / m.result.durationSec);
    const ratio = bareRps ? deniedPerSec / bareRps : NaN;
    row.throughput = `${fmt.int(deniedPerSec)} 429/s`;
    row.vsBare = bareRps ? `${fmt.ratio(ratio)} bare req/s` : '—';
    row.p50 = fmt.ms(medianOf(list, (m) => m.result.latency.p50));
    row.p99 = fmt.ms(medianOf(list, (m) => m.result.latency.p99));
    row.p999 = fmt.ms(medianOf(list, (m) => m.result.latency.p999));
    const perDenied = medianOf(list, (m) => m.redis.total / Math.max(1, denied(m.result)));
    const scriptsPerDenied = medianOf(list, (m) => m.redis.scripts / Math.max(1, denied(m.result)));
    const totalCalls = list.reduce((sum, m) => sum + m.redis.total, 0);
    row.redis =
      c.storage === 'redis'
        ? `${fmt.per(perDenied)}/denied (${fmt.per(scriptsPerDenied)} eval*); ${totalCalls.toLocaleString('en-US')} calls in all rounds`
        : 'n/a (no Redis)';
    row.spread = fmt.pct(spreadOf(list, (m) => denied(m.result) / m.result.durationSec));
    const allowed = list.reduce((sum, m) => sum + (m.result.status[200] ?? 0), 0);
    row.notes = joinNotes(
      roundsNote(list.length),
      anomalies(list, [200, 429]),
      allowed > 0 && `${allowed} requests allowed during the measured rounds`,
    );
    if (c.app === 'ours') {
      const quiet = c.storage !== 'redis' || perDenied < 0.001;
      row.target = c.storage === 'redis' ? '0 Redis calls/denied; 429/s ≥ bare req/s' : '429/s ≥ bare req/s';
      row.pass = bareRps ? quiet && ratio >= 1 : 'needs bare from A';
    }
    return row;
  });
}

// ---------------------------------------------------------------------------------------------
// Scenario P: the limiter's share of the app's CPU, from a V8 profile of the app under load

/** Issue 13's targets for ours; `peers` are the contenders ours must stay below. */
const P_TARGETS: Record<string, { max: number; peers: string[]; text: string }> = {
  'ours-memory': { max: 0.02, peers: ['rlf-memory', 'throttler-memory'], text: '≤ 2% and below every peer on memory' },
  'ours-memory-fastify': { max: 0.02, peers: [], text: '≤ 2%' },
  'ours-redis': { max: 0.04, peers: ['rlf-redis', 'throttler-redis'], text: '≤ 4% (ioredis included) and below every peer on Redis' },
};

interface ScenarioP {
  rows: Row[];
  /** The dedicated table and the limiter's top functions, for results.md. */
  markdown: string;
}

const shareText = (n: number) => (Number.isFinite(n) ? `${(n * 100).toFixed(1)}%` : '—');

async function scenarioP(redis: PrivateRedis): Promise<ScenarioP> {
  const contenders = selected(P_CONTENDERS);
  const rounds = await runRounds(
    'P',
    redis,
    contenders,
    (port) => loadQuotes(port, settings.warmupSec),
    (port) => loadQuotes(port, settings.durationSec),
    ({ result, profile }) =>
      `limiter ${shareText(profile!.share)} of ${fmt.int(profile!.busy)} busy samples (gc ${shareText(profile!.gc / profile!.busy)}, ` +
      `program ${shareText(profile!.program / profile!.busy)})  ${fmt.int(result.rps)} req/s under the profiler  [${statusText(result.status)}]`,
    true,
  );

  recordRounds('P', "limiter's share", rounds, (m) => m.profile!.share, shareText);
  const share = (name: string) => medianOf(rounds.get(name) ?? [], (m) => m.profile!.share);
  const rows = contenders.map((c): Row => {
    const list = rounds.get(c.name)!;
    const row: Row = { scenario: "P · limiter's share of app CPU (profiled, 10k clients)", contender: c.name };
    if (!list.length) return { ...row, notes: 'no successful round' };
    const shares = list.map((m) => m.profile!.share);
    row.throughput = `${shareText(share(c.name))} of busy samples`;
    row.p50 = fmt.ms(medianOf(list, (m) => m.result.latency.p50));
    row.p99 = fmt.ms(medianOf(list, (m) => m.result.latency.p99));
    row.p999 = fmt.ms(medianOf(list, (m) => m.result.latency.p999));
    row.spread = `${shareText(Math.min(...shares))} – ${shareText(Math.max(...shares))}`;
    const notes = [
      c.name === PING_FLOOR && 'reference, not a limiter: ioredis and a guard awaiting one PING per request',
      `rounds ${shares.map(shareText).join(' · ')}`,
      `${fmt.int(medianOf(list, (m) => m.result.rps))} req/s under the profiler`,
      `gc ${shareText(medianOf(list, (m) => m.profile!.gc / m.profile!.busy))}, (program) ${shareText(medianOf(list, (m) => m.profile!.program / m.profile!.busy))} of busy`,
      c.app === 'ours' && `features this app does not use: ${fmt.int(list.reduce((sum, m) => sum + (m.profile!.unused ?? 0), 0))} samples in all rounds`,
      roundsNote(list.length),
      anomalies(list, [200]),
    ];
    const cost = ADVISOR_COST[c.name];
    if (cost && rounds.get(cost.base)?.length) {
      const added = share(c.name) - share(cost.base);
      row.target = `≤ +0.3 points over ${cost.base}`;
      row.pass = added <= cost.max;
      notes.push(`${added >= 0 ? '+' : ''}${(added * 100).toFixed(2)} points over ${cost.base}`);
    }
    const target = P_TARGETS[c.name];
    if (target) {
      const peers = target.peers.filter((n) => rounds.get(n)?.length);
      row.target = target.text;
      row.pass = share(c.name) <= target.max && peers.every((n) => share(c.name) < share(n));
      if (target.peers.length && !peers.length) notes.push('no peer measured');
      if (peers.length) notes.push(`peers: ${peers.map((n) => `${n} ${shareText(share(n))}`).join(', ')}`);
    }
    row.notes = joinNotes(...notes);
    return row;
  });

  // The dedicated table, and where ours spends its samples (the optimization work's guide).
  const table = [
    "| contender | limiter's share of app CPU (median) | each round | busy samples per round | req/s under the profiler | GC of busy |",
    '|---|---|---|---|---|---|',
    ...contenders.map((c) => {
      const list = rounds.get(c.name)!;
      if (!list.length) return `| ${c.name} | no successful round | | | | |`;
      return (
        `| ${c.name}${c.name === PING_FLOOR ? ' (reference)' : ''} | **${shareText(share(c.name))}** | ${list.map((m) => shareText(m.profile!.share)).join(' · ')} | ` +
        `${fmt.int(medianOf(list, (m) => m.profile!.busy))} | ${fmt.int(medianOf(list, (m) => m.result.rps))} | ` +
        `${shareText(medianOf(list, (m) => m.profile!.gc / m.profile!.busy))} |`
      );
    }),
  ].join('\n');
  const topTable = (title: string, top: FunctionShare[], busy: number) =>
    `${title}\n\n| function | share of busy |\n|---|---|\n${top.map((f) => `| \`${f.name}\` | ${shareText(f.samples / busy)} |`).join('\n')}\n`;
  const tops = contenders
    .filter((c) => c.app === 'ours' && rounds.get(c.name)!.length)
    .map((c) => {
      const list = rounds.get(c.name)!;
      const busy = list.reduce((sum, m) => sum + m.profile!.busy, 0);
      return (
        `### ${c.name}: where the limiter's samples go (all rounds)\n\n` +
        `Samples with a frame of a feature this app does not use (observability, health, concurrency limits, ` +
        `the interceptor, RateLimitService, count outcomes, the GraphQL, WebSocket and RPC adapters): ` +
        `${fmt.int(list.reduce((sum, m) => sum + (m.profile!.unused ?? 0), 0))} of ${fmt.int(busy)} busy.\n\n` +
        topTable('By leaf frame (self time; the leaf may be code the limiter called):', mergeTops(list.map((m) => m.profile!.selfTop)), busy) +
        '\n' +
        topTable("By the innermost frame of the limiter's own code (that function and what it calls):", mergeTops(list.map((m) => m.profile!.innermostTop), 20), busy)
      );
    })
    .join('\n');
  const markdown =
    `## Limiter's share of app CPU (scenario P)\n\n${table}\n\n` +
    `Each app under \`node --cpu-prof --cpu-prof-interval=${settings.profileIntervalUs}\` (µs), loaded as in A (\`/quote\`, ${settings.keys.toLocaleString('en-US')} API keys, ` +
    `${settings.connections} connections, a limit never reached); the samples of the ${settings.durationSec} s measured run only. ` +
    "Busy = every sample but `(idle)` (GC and `(program)` included); the limiter's share = busy samples with a frame of the limiter's code " +
    'on the stack / busy samples. The limiter\'s code: ours, the library\'s build; the peers, their package and the bench\'s guard; ' +
    'on Redis, ioredis too. See bench/README.md.\n\n' +
    tops;
  return { rows, markdown };
}

// ---------------------------------------------------------------------------------------------
// HOOK: the storage / memory scenarios (bench/storage-bench.mjs, written separately)
//
// If bench/storage-bench.mjs exists (or the script BENCH_STORAGE_SCRIPT names), it runs here, after
// the HTTP scenarios, as a child process `node <script>` in bench/, stderr passed through, with:
//   BENCH_ROWS_FILE   a path where it should write a JSON array of rows for the one table: the Row
//                     shape of harness/report.ts, { scenario, contender, throughput?, vsBare?, p50?,
//                     p99?, p999?, redis?, spread?, target?, pass?, notes? }, every cell a string
//                     except pass (boolean: ✅/❌);
//   BENCH_REDIS_URL   this run's private redis-server, just flushed (free to use, or start its own);
//   BENCH_ROUNDS / BENCH_DURATION / BENCH_WARMUP as the runner read them, and STORAGE_ROUNDS /
//   STORAGE_DURATION set from BENCH_ROUNDS / BENCH_DURATION when those were given and these were not;
//   BENCH_LIB_DIR (and STORAGE_LIB, unless set) the copy of dist/esm the HTTP apps loaded, so that
//   both halves measure one build even if dist/esm is rebuilt meanwhile.
// A script that writes no rows but (re)writes its own markdown (BENCH_STORAGE_MARKDOWN, default
// bench/results-storage.md) gets one row pointing to it, and that markdown is appended below the
// table in results.md. It is killed after BENCH_STORAGE_TIMEOUT seconds (default 900).
// BENCH_SKIP_STORAGE=1 skips it.

interface StorageOutcome {
  rows: Row[];
  /** The script's own markdown, when it reported no rows. */
  markdown?: string;
}

async function storageHook(redis: PrivateRedis): Promise<StorageOutcome> {
  const script = process.env.BENCH_STORAGE_SCRIPT ?? join(BENCH_DIR, 'storage-bench.mjs');
  const markdownFile = process.env.BENCH_STORAGE_MARKDOWN ?? join(BENCH_DIR, 'results-storage.md');
  if (process.env.BENCH_SKIP_STORAGE) return { rows: [] };
  if (!existsSync(script)) {
    log(`storage scenarios: ${script} not present, skipped`);
    return { rows: [] };
  }
  const rowsFile = join(tmpdir(), `bench-storage-rows-${process.pid}.json`);
  rmSync(rowsFile, { force: true });
  await redis.flushAll();
  const timeoutSec = numberEnv('BENCH_STORAGE_TIMEOUT', 900);
  const startedAt = Date.now();
  log(`storage scenarios: running ${script} (stopped after ${timeoutSec} s at most)`);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    BENCH_ROWS_FILE: rowsFile,
    BENCH_REDIS_URL: redis.url,
    BENCH_ROUNDS: String(settings.rounds),
    BENCH_DURATION: String(settings.durationSec),
    BENCH_WARMUP: String(settings.warmupSec),
    BENCH_LIB_DIR: LIB_SNAPSHOT,
    STORAGE_LIB: process.env.STORAGE_LIB ?? LIB_SNAPSHOT, // the storage bench's knob: measure the same build
  };
  if (process.env.BENCH_ROUNDS) env.STORAGE_ROUNDS ??= process.env.BENCH_ROUNDS;
  if (process.env.BENCH_DURATION) env.STORAGE_DURATION ??= process.env.BENCH_DURATION;
  // Its stdout goes to our stderr: the one table printed at the end stays the last thing on stdout.
  const child = spawn(process.execPath, [script], { cwd: BENCH_DIR, stdio: ['ignore', 'pipe', 'inherit'], env });
  child.stdout!.pipe(process.stderr);
  const killer = setTimeout(() => child.kill('SIGKILL'), timeoutSec * 1_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once('exit', (c, s) => resolve([c, s])),
  );
  clearTimeout(killer);
  const scriptName = script.startsWith(BENCH_DIR) ? `bench/${script.slice(BENCH_DIR.length).replace(/^\//, '')}` : script;
  const problem = code === 0 ? '' : `⚠ ${scriptName} exited with ${signal ?? `code ${code}`}`;
  const summary = (notes: string): Row => ({ scenario: `Storage scenarios (${scriptName})`, contender: '—', notes: joinNotes(problem, notes) });

  if (existsSync(rowsFile)) {
    try {
      const rows = JSON.parse(readFileSync(rowsFile, 'utf8')) as Row[];
      if (!Array.isArray(rows)) throw new Error('not a JSON array');
      return { rows: problem ? [...rows, summary('')] : rows };
    } catch (error) {
      return { rows: [summary(`unreadable BENCH_ROWS_FILE: ${(error as Error).message}`)] };
    } finally {
      rmSync(rowsFile, { force: true });
    }
  }
  if (existsSync(markdownFile) && statSync(markdownFile).mtimeMs >= startedAt) {
    return {
      rows: [summary('it reports no rows for this table (BENCH_ROWS_FILE); its own tables are appended below')],
      markdown: readFileSync(markdownFile, 'utf8'),
    };
  }
  return { rows: [summary('it reported nothing (no BENCH_ROWS_FILE rows, no markdown)')] };
}

// ---------------------------------------------------------------------------------------------

/** Which build of the library this run measures: commit, uncommitted lib/ changes, build time, content hash. */
function describeLibrary(): string {
  const git = (...args: string[]) => {
    try {
      return execFileSync('git', args, { cwd: REPO_DIR, encoding: 'utf8' }).trim();
    } catch {
      return '?';
    }
  };
  const libChanges = git('status', '--porcelain', '--', 'lib');
  const built = statSync(join(LIB_SNAPSHOT, 'index.js')).mtime;
  const hash = createHash('sha256');
  for (const file of (readdirSync(LIB_SNAPSHOT, { recursive: true }) as string[]).filter((f) => f.endsWith('.js')).sort()) {
    hash.update(file).update(readFileSync(join(LIB_SNAPSHOT, file)));
  }
  return (
    `commit ${git('rev-parse', '--short', 'HEAD')}${libChanges ? ' + uncommitted changes in lib/' : ''}, ` +
    `dist/esm built ${built.toISOString()} (copied at the start of the run; .js sha256 ${hash.digest('hex').slice(0, 12)})`
  );
}

function describeRun(redisVersion: string, started: Date, finished: Date, loadBefore: number, library: string): string {
  const cpu = cpus();
  return [
    `- Run: ${started.toISOString()} → ${finished.toISOString()} (${Math.round((+finished - +started) / 1000)} s)`,
    `- Settings: BENCH_ROUNDS=${settings.rounds} BENCH_DURATION=${settings.durationSec}s BENCH_WARMUP=${settings.warmupSec}s ` +
      `BENCH_CONNECTIONS=${settings.connections} BENCH_KEYS=${settings.keys} BENCH_HOT_LIMIT=${settings.hotLimit} ` +
      `BENCH_PACED_CONNECTIONS=${settings.pacedConnections}` +
      (settings.fixedRate ? ` BENCH_FIXED_RATE=${settings.fixedRate}` : '') +
      ` scenarios ${settings.scenarios.join(',')}`,
    `- Machine: ${cpu.length} × ${cpu[0]?.model ?? '?'}; Node ${process.version}; Redis ${redisVersion} (private, no persistence); ` +
      `app, load generator and Redis share these cores, unpinned; load average ${loadBefore.toFixed(2)} before, ${loadavg()[0].toFixed(2)} after`,
    `- Library: ${library}`,
  ].join('\n');
}

const LEGEND = [
  'Medians over the rounds; "Rounds spread" is (max − min) / median of the throughput (A, C) or of p99 (B); every round is listed below the table.',
  '- A: closed loop (autocannon), `BENCH_CONNECTIONS` connections, each request carrying the next of `BENCH_KEYS` API keys; latency of every response.',
  "- B: open loop at a fixed rate, sent in even 1 ms steps (not autocannon's `overallRate`, which sends each second's quota in one burst); " +
    'latency from write to last byte, or from when it fell due for a request that had to wait for a free connection.',
  '- C: closed loop on one API key past its limit, each warm-up + measured run inside one minute (the window of the limit); ' +
    "429/s against bare's req/s from A.",
  "- P: as A, each app under V8's sampling profiler; the limiter's share of the app's busy samples during the measured run (see the section below the table); " +
    '"Rounds spread" is the lowest and highest round.',
  '- Redis calls: delta of every `cmdstat_*` in INFO commandstats over the measured run (warm-up and FLUSHALL excluded). Redis 7 counts the ' +
    'commands a script runs as well, so one EVALSHA whose script calls TIME, HGET, … shows as several calls; "eval*" counts EVAL/EVALSHA/FCALL alone. ' +
    'Divided by requests (A, B) or by 429 answers (C). Memory contenders never connect to Redis.',
  '- Storage alone, Memory: bench/storage-bench.mjs, no HTTP; its own tables (min – max of every contender) are in bench/results-storage.md. ' +
    'Storage alone: checks/s, median of STORAGE_ROUNDS interleaved runs, spread of those runs; "vs bare / reference" is ours / the contender named, ' +
    "RedisStorage's target being against the faster of RateLimiterRedis's two set-ups in the run. Memory: heap bytes per key in a fresh process " +
    '(one measurement), and Redis MEMORY USAGE per key.',
].join('\n');

async function main(): Promise<void> {
  if (!existsSync(join(REPO_DIR, 'dist/esm/index.js'))) throw new Error('dist/esm is missing: run `npm run build` at the repository root first');
  const started = new Date();
  const loadBefore = loadavg()[0];
  rmSync(LIB_SNAPSHOT, { recursive: true, force: true });
  cpSync(join(REPO_DIR, 'dist/esm'), LIB_SNAPSHOT, { recursive: true, preserveTimestamps: true });
  const library = describeLibrary();
  log(`library: ${library}`);
  const redis = await PrivateRedis.start();
  const cleanup = () => {
    killAllApps();
    redis.kill();
  };
  process.once('exit', cleanup);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

  const measurements = (settings.scenarios.includes('A') ? settings.contenders.length : 0) +
    (settings.scenarios.includes('B') ? selected(B_CONTENDERS).length : 0) +
    (settings.scenarios.includes('C') ? selected(C_CONTENDERS).length : 0) +
    (settings.scenarios.includes('P') ? selected(P_CONTENDERS).length : 0);
  const estimate = measurements * settings.rounds * (settings.warmupSec + settings.durationSec + 3);
  log(`HTTP scenarios ${settings.scenarios.join(', ')}: ${settings.rounds} rounds × ${settings.durationSec} s, ` +
    `${settings.warmupSec} s warm-up per app start; about ${Math.ceil(estimate / 60)} min. Redis ${redis.version} at ${redis.url}`);

  const rows: Row[] = [];
  let storageMarkdown: string | undefined;
  let profileMarkdown: string | undefined;
  try {
    let bareRps: number | undefined;
    if (settings.scenarios.includes('A')) {
      const a = await scenarioA(redis);
      rows.push(...a.rows);
      bareRps = a.bareRps;
    }
    if (settings.scenarios.includes('B')) rows.push(...(await scenarioB(redis, bareRps)));
    if (settings.scenarios.includes('C')) rows.push(...(await scenarioC(redis, bareRps)));
    if (settings.scenarios.includes('P')) {
      const p = await scenarioP(redis);
      rows.push(...p.rows);
      profileMarkdown = p.markdown;
    }
    const storage = await storageHook(redis);
    rows.push(...storage.rows);
    storageMarkdown = storage.markdown;
  } finally {
    await redis.stop();
  }

  const appendix = roundLines.length
    ? `\n## Every round\n\n| Scenario | Contender | Metric | Rounds, in order |\n|---|---|---|---|\n${roundLines.join('\n')}\n`
    : '';
  const report = `# Benchmark results\n\n${describeRun(redis.version, started, new Date(), loadBefore, library)}\n\n${markdownTable(rows)}\n\n${LEGEND}\n`;
  const storageSection = storageMarkdown ? `\n## Storage scenarios, as their script reported them\n\n${storageMarkdown.replace(/^#+ .*\n+/, '')}\n` : '';
  const profileSection = profileMarkdown ? `\n${profileMarkdown}` : '';
  writeFileSync(join(BENCH_DIR, 'results.md'), report + profileSection + appendix + storageSection);
  console.log(`\n${report}${profileSection}\n(written to bench/results.md)`);
}

await main();
