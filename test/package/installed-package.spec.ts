// The package as users get it. `npm pack` (whose prepack builds dist/esm and dist/cjs) makes the
// tarball; each app of test/package/fixtures is copied to a temporary directory, installed from its
// committed lockfile (`npm ci`), given the tarball, compiled with this repository's TypeScript and
// started, and its rate-limited route is asked until it answers 429:
//   - nest11-cjs: Nest 11, compiled to CommonJS as the Nest 11 CLI sets an app up; must load dist/cjs.
//   - nest12-esm: Nest 12 (ES modules only), compiled to ES modules; must load dist/esm.
// Needs the npm registry (through the npm cache). The package is built and packed from a copy of
// what it is made of, so the repository tree is left as it was, and a second test run or a
// `npm run build` in the same checkout cannot pack a build another one is half-way through.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURES = fileURLToPath(new URL('./fixtures', import.meta.url));
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const PACKAGE = 'nestjs-rate-limiting';

const PACK_TIMEOUT = 5 * 60_000;
const INSTALL_TIMEOUT = 5 * 60_000;
const COMPILE_TIMEOUT = 2 * 60_000;
const START_TIMEOUT = 30_000;

interface Fixture {
  name: string;
  /** The build of the package the app must load. */
  build: 'cjs' | 'esm';
}

const APPS: Fixture[] = [
  { name: 'nest11-cjs', build: 'cjs' },
  { name: 'nest12-esm', build: 'esm' },
];

/** What an app prints once it listens (see the fixtures' main.ts). */
interface Started {
  port: number;
  /** The file `nestjs-rate-limiting` resolves to in the app (a path, or a file URL under ESM). */
  resolved: string;
  /** CommonJS only: the package's files in require.cache. */
  loaded?: string[];
}

interface PackedFile {
  path: string;
}

let workDir: string;
let tarball: string;
let packedFiles: string[];
const children = new Set<ChildProcess>();

/** The environment of `npm test` without what npm sets for its own scripts (project dir, package fields). */
function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const name of Object.keys(env)) {
    if (/^npm_(package|lifecycle)_/.test(name) || name === 'npm_config_local_prefix' || name === 'INIT_CWD') delete env[name];
  }
  return env;
}

const NETWORK_ERROR = /ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|socket hang up|request to \S+ failed/i;

/** Runs a command to completion; its stdout, or an error with its output (and a word on the registry when npm could not reach it). */
function run(command: string, args: string[], cwd: string, timeout: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd, env: childEnv(), timeout, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const output = `${stderr}\n${stdout}`.trim().split('\n').slice(-40).join('\n');
      const how = error.killed ? `killed after ${timeout / 1000} s` : `exit code ${error.code}`;
      let message = `\`${command} ${args.join(' ')}\` in ${cwd} failed (${how})`;
      if (command === 'npm' && args[0] !== 'pack' && (NETWORK_ERROR.test(output) || error.killed)) {
        message +=
          `\nThe npm registry (${registry()}) looks unreachable. This spec installs Nest 11 and Nest 12 apps ` +
          'from it (test/package/fixtures, through the npm cache): check the network or npm proxy settings.';
      }
      reject(new Error(`${message}\n${output}`));
    });
  });
}

function registry(): string {
  try {
    return execFileSync('npm', ['config', 'get', 'registry'], { env: childEnv(), encoding: 'utf8', timeout: 10_000 }).trim();
  } catch {
    return 'see `npm config get registry`';
  }
}

/** Copies a fixture app out of the repository, installs it and the tarball, compiles it; its directory. */
async function install(fixture: Fixture): Promise<{ dir: string; compiledFiles: string[] }> {
  const dir = join(workDir, fixture.name);
  // a fixture someone installed or built in place brings neither along
  await cp(join(FIXTURES, fixture.name), dir, { recursive: true, filter: (source) => !/[\\/](node_modules|dist)$/.test(source) });
  const quiet = ['--no-audit', '--no-fund', '--prefer-offline'];
  await run('npm', ['ci', ...quiet], dir, INSTALL_TIMEOUT);
  await run('npm', ['install', '--no-save', ...quiet, tarball], dir, INSTALL_TIMEOUT);
  const listed = await run(process.execPath, [TSC, '-p', dir, '--listFiles'], dir, COMPILE_TIMEOUT);
  return { dir, compiledFiles: listed.split('\n').map((line) => line.trim()).filter(Boolean) };
}

/** Starts a compiled fixture app on a free loopback port and waits for the line it prints once it listens. */
function start(dir: string): Promise<{ child: ChildProcess } & Started> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['dist/main.js'], { cwd: dir, env: childEnv({ PORT: '0' }), stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    let settled = false;
    const fail = (reason: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`the app in ${dir} ${reason}\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    };
    const timer = setTimeout(() => fail(`printed no port within ${START_TIMEOUT / 1000} s`), START_TIMEOUT);
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      const line = stdout.split('\n').slice(0, -1).find((l) => l.startsWith('{'));
      if (!line || settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ child, ...(JSON.parse(line) as Started) });
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', (error) => fail(`could not start: ${error.message}`));
    child.once('exit', (code, signal) => fail(`exited (${signal ?? `code ${code}`}) before it listened`));
  });
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(killer);
  children.delete(child);
}

/** What `npm pack` builds the package from (scripts/build-package.mjs and its tsconfigs) and puts in it. */
const PACKAGE_SOURCES = ['package.json', 'README.md', 'LICENSE', 'lib', 'scripts', 'tsconfig.json', 'tsconfig.esm.json', 'tsconfig.cjs.json'];

/** A copy of the package's sources in `dir`, with the repository's node_modules (TypeScript, types) linked in. */
async function packageSources(dir: string): Promise<string> {
  await Promise.all(PACKAGE_SOURCES.map((entry) => cp(join(ROOT, entry), join(dir, entry), { recursive: true })));
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return dir;
}

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), `${PACKAGE}-package-`));
  const sources = await packageSources(join(workDir, 'package'));
  const [packed] = JSON.parse(await run('npm', ['pack', '--json', '--pack-destination', workDir], sources, PACK_TIMEOUT)) as [
    { filename: string; files: PackedFile[] },
  ];
  tarball = join(workDir, packed.filename);
  packedFiles = packed.files.map((file) => file.path).sort();
}, PACK_TIMEOUT);

afterAll(async () => {
  await Promise.all([...children].map(stop));
  if (workDir) await rm(workDir, { recursive: true, force: true });
}, 30_000);

describe('the packed tarball', () => {
  const EXTRAS = ['LICENSE', 'README.md', 'package.json', 'dist/cjs/package.json', 'dist/esm/package.json'];

  it('holds README.md, LICENSE, package.json and the two builds with their declarations', () => {
    expect(packedFiles).toEqual(expect.arrayContaining([...EXTRAS, 'dist/cjs/index.js', 'dist/cjs/index.d.ts', 'dist/esm/index.js', 'dist/esm/index.d.ts']));
  });

  it('holds nothing else: no source maps, sources, sample app, tests or build info', () => {
    const others = packedFiles.filter((file) => !EXTRAS.includes(file) && !/^dist\/(cjs|esm)\/[\w./-]+(?<!\.d)\.js$|^dist\/(cjs|esm)\/[\w./-]+\.d\.ts$/.test(file));
    expect(others).toEqual([]);
  });

  it('has the same modules, each with its declarations, in both builds (the CLI, an ES module, in the ESM one only)', () => {
    const build = (dir: string) => packedFiles.filter((file) => file.startsWith(`dist/${dir}/`)).map((file) => file.slice(dir.length + 6));
    expect(build('cjs')).toEqual(build('esm').filter((file) => !file.startsWith('cli/')));
    expect(build('esm')).toEqual(expect.arrayContaining(['cli/main.js', 'cli/report-command.js', 'cli/report-table.js']));
    const js = build('esm').filter((file) => file.endsWith('.js') && !file.endsWith('.d.js'));
    expect(js.map((file) => file.replace(/\.js$/, '.d.ts')).filter((dts) => !build('esm').includes(dts))).toEqual([]);
  });
});

describe.each(APPS)('installed in the $name app', (fixture) => {
  let dir: string;
  let compiledFiles: string[];
  let app: { child: ChildProcess } & Started;

  beforeAll(async () => {
    ({ dir, compiledFiles } = await install(fixture));
    app = await start(dir);
  }, INSTALL_TIMEOUT * 2 + COMPILE_TIMEOUT + START_TIMEOUT);

  afterAll(async () => {
    await stop(app?.child);
  }, 10_000);

  const inPackage = (build: string, file: string) => new RegExp(`/node_modules/${PACKAGE}/dist/${build}/${file.replace(/\./g, '\\.')}$`);

  it(`type-checks against the ${fixture.build} declarations`, () => {
    expect(compiledFiles).toEqual(expect.arrayContaining([expect.stringMatching(inPackage(fixture.build, 'index.d.ts'))]));
    const other = fixture.build === 'cjs' ? 'esm' : 'cjs';
    expect(compiledFiles.filter((file) => file.includes(`/node_modules/${PACKAGE}/dist/${other}/`))).toEqual([]);
  });

  it(`loads the ${fixture.build} build`, () => {
    expect(app.resolved).toMatch(inPackage(fixture.build, 'index.js'));
    if (fixture.build === 'cjs') {
      expect(app.loaded).toEqual(expect.arrayContaining([expect.stringMatching(inPackage('cjs', 'index.js'))]));
      expect(app.loaded!.filter((file) => !file.includes(`/node_modules/${PACKAGE}/dist/cjs/`))).toEqual([]);
    }
  });

  it('installs the nestjs-rate-limiting command, which runs', async () => {
    const { stdout } = await promisify(execFile)(join(dir, 'node_modules', '.bin', 'nestjs-rate-limiting'), ['--help'], { timeout: 20_000 });
    expect(stdout).toMatch(/^Usage: nestjs-rate-limiting <command>/);
    expect(stdout).toContain('report');
  });

  it('answers GET /quote twice with rate-limit headers, then 429 with Retry-After and a JSON body', async () => {
    const url = `http://127.0.0.1:${app.port}/quote`;
    for (const remaining of [1, 0]) {
      const response = await fetch(url);
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ symbol: 'ACME', price: 42 });
      expect(response.headers.get('ratelimit-policy')).toMatch(/;q=2;w=60$/);
      expect(response.headers.get('ratelimit')).toMatch(new RegExp(`;r=${remaining};t=[1-9]\\d*$`));
    }

    const denied = await fetch(url);
    expect(denied.status).toBe(429);
    expect(denied.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
    expect(denied.headers.get('ratelimit-policy')).toMatch(/;q=2;w=60$/);
    expect(denied.headers.get('ratelimit')).toMatch(/;r=0;t=[1-9]\d*$/);
    expect(denied.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await denied.json()).toEqual(expect.objectContaining({ statusCode: 429, error: 'Too Many Requests' }));
  });
});
