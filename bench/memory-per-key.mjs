// Heap (and array buffer) bytes per key in MemoryStorage, and the maxKeys bound under a flood of distinct clients.
// Run from the repository root: `npm run bench:memory` (builds, then runs this with --expose-gc).
// Each algorithm is measured in a fresh child process so one run's garbage cannot skew another.
import { execFileSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const lib = pathToFileURL(resolve(root, 'dist/esm/index.js')).href;
const bindRulesModule = pathToFileURL(resolve(root, 'dist/esm/rules/bind-rules.js')).href;
const ALGORITHMS = ['fixed-window', 'sliding-window-log', 'sliding-window-counter', 'token-bucket', 'leaky-bucket', 'gcra'];
const FLOOD = Number(process.env.KEYS ?? 1_000_000);

if (process.argv[2] === 'measure') {
  const [, , , algorithm, keysArg, maxKeysArg] = process.argv;
  const keys = Number(keysArg);
  const maxKeys = Number(maxKeysArg);
  const { MemoryStorage, parseRate } = await import(lib);
  const { bindRules } = await import(bindRulesModule);
  const [rule] = bindRules(parseRate('100/minute'), { name: 'bench', bucket: 'ItemsController.findAll', algorithm });
  const base = 'rl:{ip:';
  // heapUsed leaves out typed-array backing stores (the storage's state), so they are added
  const used = () => process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
  global.gc();
  const before = used();
  const storage = new MemoryStorage({ maxKeys });
  let largest = 0;
  for (let i = 0; i < keys; i++) {
    // keys built as the guard builds them: base + identity + suffix, per request
    const ip = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
    storage.check([{ key: `${base}${ip}}:${rule.keySuffix}`, rule }], 1);
    if (storage.size > largest) largest = storage.size;
  }
  global.gc();
  const after = used();
  console.log(JSON.stringify({ algorithm, keys, maxKeys, held: storage.size, largest, bytesPerKey: Math.round((after - before) / storage.size) }));
} else {
  const rows = [];
  for (const algorithm of ALGORITHMS) {
    // fill to the bound (bytes per key), then flood far past it (the bound holds)
    const perKey = JSON.parse(execFileSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), 'measure', algorithm, '200000', '200000']).toString());
    const flood = JSON.parse(execFileSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), 'measure', algorithm, String(FLOOD), '100000']).toString());
    if (flood.largest > flood.maxKeys) throw new Error(`${algorithm}: held ${flood.largest} keys, over maxKeys ${flood.maxKeys}`);
    rows.push({ algorithm, 'heap B/key (200k keys)': perKey.bytesPerKey, [`most keys held, ${FLOOD} clients`]: flood.largest, maxKeys: flood.maxKeys });
  }
  console.table(rows);
}
