// Loaded with `node --import ./dist/single-nest.js` by every bench app (see single-nest-hooks.ts).
import { register } from 'node:module';

register('./single-nest-hooks.js', import.meta.url, { data: { libDir: process.env.BENCH_LIB_DIR } });
