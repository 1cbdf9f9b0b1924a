// The limiter's share of an app's CPU, from a V8 CPU profile (`node --cpu-prof`) of the app.
//
// Whole-app throughput swings 10-60 % from round to round on a small shared machine; the share of
// one process's busy samples that have the limiter's code on the stack holds within tenths of a
// percent, so it can settle what a limiter costs its users (issue 13).
//
// - Samples: only those taken while the load generator ran its measured run (start-up, warm-up and
//   shutdown excluded). The runner gives the window as CLOCK_MONOTONIC microseconds
//   (`process.hrtime`), the clock V8 stamps profiles with on Linux; a window holding no sample is an
//   error, never a 0 % share.
// - Busy: every sample but `(idle)`. `(program)` (native code with no JavaScript on the stack: the
//   event loop, socket reads and writes, the HTTP parser's C side) and `(garbage collector)` are
//   the app's CPU too, so they count as busy, attributed to no one: garbage the limiter makes is
//   collected there, and no stack says whose it was.
// - The limiter's samples: busy samples with at least one frame of the limiter's code anywhere on
//   their stack (counted once however many there are). What the limiter calls (Nest's reflector,
//   Express's `res.set`, Node's `setHeader`) is on its behalf and counts; code that resumes after
//   an awaited limiter call starts from a fresh stack and does not.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Contender } from './apps.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Tells whether a frame is the limiter's code. */
export type FrameMatcher = (frame: CallFrame) => boolean;

/** ioredis and the packages only it calls (`debug` is left out: Express loads it too). */
const REDIS_CLIENT = ['ioredis', '@ioredis/commands', 'cluster-key-slot', 'denque', 'redis-errors', 'standard-as-callback'].map(
  (name) => `/node_modules/${name}/`,
);

const inPackages = (url: string, packages: readonly string[]) => packages.some((p) => url.includes(p));
/** Functions of a bench app's own guard, by file and name (the guard classes of src/apps/*.ts). */
const guardFunctions = (app: string, names: readonly string[]) => (frame: CallFrame) =>
  frame.url.endsWith(`/dist/apps/${app}.js`) && names.includes(frame.functionName);

/**
 * The limiter's code for each contender:
 * - ours: every file of the library's build the app loaded (the run's copy of dist/esm, or dist/esm itself);
 * - rate-limiter-flexible: its package, and `canActivate` of the bench's RateLimiterFlexibleGuard;
 * - @nestjs/throttler: its package (ThrottlerGuard and its memory storage), @nest-lab/throttler-storage-redis,
 *   and `getTracker` of the bench's ThrottlerGuard subclass;
 * - the PING reference: `canActivate` and `admit` of its guard;
 * and, for every contender on Redis, ioredis with the packages only it uses.
 */
export function limiterFrames(c: Contender, libDirs: readonly string[]): FrameMatcher {
  const libraries = libDirs.map((dir) => pathToFileURL(dir.endsWith('/') ? dir : `${dir}/`).href);
  const redis: FrameMatcher = c.storage === 'redis' ? (f) => inPackages(f.url, REDIS_CLIENT) : () => false;
  let own: FrameMatcher;
  switch (c.app) {
    case 'ours':
      own = (f) => libraries.some((lib) => f.url.startsWith(lib));
      break;
    case 'rlf': {
      const guard = guardFunctions('rlf', ['canActivate']);
      own = (f) => f.url.includes('/node_modules/rate-limiter-flexible/') || guard(f);
      break;
    }
    case 'throttler': {
      const guard = guardFunctions('throttler', ['getTracker']);
      own = (f) => inPackages(f.url, ['/node_modules/@nestjs/throttler/', '/node_modules/@nest-lab/throttler-storage-redis/']) || guard(f);
      break;
    }
    case 'redis-ping':
      own = guardFunctions('redis-ping', ['canActivate', 'admit']);
      break;
    default:
      own = () => false;
  }
  return (f) => own(f) || redis(f);
}

/**
 * Ours: frames of the features the bench app does not use (observability, health, concurrency
 * limits and their interceptor, RateLimitService, count/refund outcomes, the other transports'
 * adapters). Issue 13: unused, they must add nothing to the share.
 */
export function unusedFeatureFrames(c: Contender, libDirs: readonly string[]): FrameMatcher | undefined {
  if (c.app !== 'ours') return undefined;
  const libraries = libDirs.map((dir) => pathToFileURL(dir.endsWith('/') ? dir : `${dir}/`).href);
  // the advisor counts as unused only where it is off
  const unused = c.advisor
    ? /^(observability|health|concurrency|interceptors|service|outcomes)\/|^contexts\/(graphql|ws|rpc)\./
    : /^(observability|health|concurrency|interceptors|service|outcomes|advisor)\/|^contexts\/(graphql|ws|rpc)\./;
  return (f) => {
    const lib = libraries.find((prefix) => f.url.startsWith(prefix));
    return lib !== undefined && unused.test(f.url.slice(lib.length));
  };
}

export interface FunctionShare {
  /** `name file:line`. */
  name: string;
  /** Samples, of the busy samples in the window. */
  samples: number;
}

export interface ProfileShare {
  /** Samples in the measured window, `(idle)` included. */
  samples: number;
  busy: number;
  limiter: number;
  /** limiter / busy. */
  share: number;
  gc: number;
  program: number;
  /** The limiter's samples by their leaf frame (self time; the leaf may be code the limiter called). */
  selfTop: FunctionShare[];
  /** The limiter's samples by their innermost frame of the limiter's own code (that function and what it calls). */
  innermostTop: FunctionShare[];
  /** Busy samples with a frame of an unused feature on the stack (see unusedFeatureFrames); undefined if not asked. */
  unused?: number;
}

const SPECIAL = new Set(['(root)', '(program)', '(idle)', '(garbage collector)']);

function frameName(frame: CallFrame): string {
  if (SPECIAL.has(frame.functionName)) return frame.functionName;
  const url = frame.url
    .replace(/^file:\/\/.*\/node_modules\//, '')
    .replace(/^file:\/\/.*\/lib-snapshot\//, 'lib/')
    .replace(/^file:\/\/.*\/dist\/esm\//, 'lib/')
    .replace(/^file:\/\/.*\/bench\/dist\//, 'bench/');
  return `${frame.functionName || '(anonymous)'} ${url || '(native)'}:${frame.lineNumber + 1}`;
}

const topOf = (counts: Map<string, number>, n = 10): FunctionShare[] =>
  [...counts]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, samples]) => ({ name, samples }));

/**
 * Reads the one `.cpuprofile` in `dir` and measures the limiter's share of the busy samples taken
 * between `fromUs` and `toUs` (CLOCK_MONOTONIC microseconds).
 */
export function limiterShare(dir: string, isLimiter: FrameMatcher, fromUs: number, toUs: number, isUnused?: FrameMatcher): ProfileShare {
  // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread, the one that
  // serves requests (the module hooks' thread writes a profile of its own).
  const files = readdirSync(dir).filter((f) => /^CPU\.\d+\.\d+\.\d+\.0\.\d+\.cpuprofile$/.test(f));
  if (files.length !== 1) {
    throw new Error(`expected one main-thread .cpuprofile in ${dir}, found ${files.length} (did the app exit through process.exit?)`);
  }
  const profile = JSON.parse(readFileSync(join(dir, files[0]), 'utf8')) as CpuProfile;

  // Walk the call tree from its root: for every node, the innermost limiter frame at or above it,
  // and whether a frame of an unused feature is at or above it.
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const innermost = new Map<number, ProfileNode | null>();
  const unusedNodes = new Set<number>();
  const childIds = new Set(profile.nodes.flatMap((n) => n.children ?? []));
  const stack: [ProfileNode, ProfileNode | null, boolean][] = profile.nodes.filter((n) => !childIds.has(n.id)).map((n) => [n, null, false]);
  while (stack.length) {
    const [node, above, unusedAbove] = stack.pop()!;
    const mine = isLimiter(node.callFrame) ? node : above;
    const unusedHere = unusedAbove || (isUnused?.(node.callFrame) ?? false);
    innermost.set(node.id, mine);
    if (unusedHere) unusedNodes.add(node.id);
    for (const id of node.children ?? []) stack.push([byId.get(id)!, mine, unusedHere]);
  }
  let unused = 0;

  let samples = 0;
  let busy = 0;
  let limiter = 0;
  let gc = 0;
  let program = 0;
  const self = new Map<string, number>();
  const inner = new Map<string, number>();
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i];
    if (at < fromUs || at > toUs) continue;
    samples++;
    const node = byId.get(profile.samples[i])!;
    const fn = node.callFrame.functionName;
    if (fn === '(idle)') continue;
    busy++;
    if (fn === '(garbage collector)') gc++;
    if (fn === '(program)') program++;
    if (unusedNodes.has(node.id)) unused++;
    const own = innermost.get(node.id);
    if (!own) continue;
    limiter++;
    const leaf = frameName(node.callFrame);
    self.set(leaf, (self.get(leaf) ?? 0) + 1);
    const ownName = frameName(own.callFrame);
    inner.set(ownName, (inner.get(ownName) ?? 0) + 1);
  }
  if (busy === 0) {
    throw new Error(
      `no busy sample between ${fromUs} and ${toUs} µs (profile ${profile.startTime}–${profile.endTime} µs): ` +
        'the profile and the runner do not share a clock here',
    );
  }
  return {
    samples,
    busy,
    limiter,
    share: limiter / busy,
    gc,
    program,
    selfTop: topOf(self, 40),
    innermostTop: topOf(inner, 40),
    unused: isUnused ? unused : undefined,
  };
}

/** Sums per-function counts over rounds, for the top lists of a contender. */
export function mergeTops(lists: readonly FunctionShare[][], n = 10): FunctionShare[] {
  const counts = new Map<string, number>();
  for (const list of lists) for (const { name, samples } of list) counts.set(name, (counts.get(name) ?? 0) + samples);
  return topOf(counts, n);
}
