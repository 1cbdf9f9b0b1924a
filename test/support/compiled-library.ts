import { execFile } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Compiles the library and the sample app for child processes that run them as plain Node.
 * Inside the repo, so the ESM output finds package.json ("type": "module") and node_modules;
 * one directory per process, so concurrent runs never delete each other's build.
 */
export async function compileForChildProcesses(name: string): Promise<{ dir: string; libraryIndex: string; remove(): void }> {
  const dir = join(ROOT, '.test-build', `${name}-${process.pid}`);
  const libraryIndex = join(dir, 'lib', 'index.js');
  const tsc = join(ROOT, 'node_modules', '.bin', 'tsc');
  await promisify(execFile)(tsc, ['-p', 'tsconfig.build.json', '--outDir', dir], { cwd: ROOT }).catch((error: { stdout?: string }) => {
    // type errors still emit JS; only missing output stops the test
    if (!existsSync(libraryIndex)) throw new Error(`tsc produced no ${libraryIndex}:\n${error.stdout ?? String(error)}`);
  });
  return { dir, libraryIndex, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
