// Builds the published package from lib/ only: ES modules in dist/esm (Nest 12, and Nest 11 apps
// that are ESM) and CommonJS in dist/cjs (Nest 11 apps, whose Jest cannot require() ES modules).
// Each build has its declarations and a package.json naming its module format; no source maps,
// since lib/*.ts is not shipped. Run by `npm run build` and by `prepack`.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const builds = [
  { tsconfig: 'tsconfig.esm.json', outDir: 'dist/esm', type: 'module' },
  { tsconfig: 'tsconfig.cjs.json', outDir: 'dist/cjs', type: 'commonjs' },
];

for (const { tsconfig, outDir, type } of builds) {
  const out = join(root, outDir);
  rmSync(out, { recursive: true, force: true });
  execFileSync(process.execPath, [tsc, '-p', join(root, tsconfig)], { cwd: root, stdio: 'inherit' });
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'package.json'), `${JSON.stringify({ type }, null, 2)}\n`);
}

// the `nestjs-rate-limiting` bin: npm makes it executable when it installs the package, a checkout has to itself
chmodSync(join(root, 'dist/esm/cli/main.js'), 0o755);
