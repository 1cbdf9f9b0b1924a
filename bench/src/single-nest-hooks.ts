// Module resolution hooks of the bench apps.
//
// 1. One copy of Nest per process. The apps import the library from the repository's build
//    (../dist/esm), whose bare imports would resolve from the repository's own node_modules while
//    the app and the competitors resolve from bench/node_modules: two copies of @nestjs/core in
//    one process, and Nest's DI (which keys providers by class) breaks. An app that installs the
//    library from npm has one copy of its peers; these hooks give the bench apps the same: bare
//    imports of the shared packages made from the library resolve from bench/node_modules.
// 2. One build per run. The library is rebuilt while other work goes on; the runner copies
//    dist/esm once (BENCH_LIB_DIR) and every app of the run loads that copy.
import type { InitializeHook, ResolveHook } from 'node:module';
import { pathToFileURL } from 'node:url';

/** Packages the library shares with its host app: peers, and ioredis (same version as the competitors'). */
const SHARED = /^(?:@nestjs\/(?:common|core|platform-express|platform-fastify)|reflect-metadata|rxjs|ioredis)(?:\/|$)/;
const LIBRARY = new URL('../../dist/esm/', import.meta.url).href;
const BENCH = new URL('../package.json', import.meta.url).href;
let snapshot: string | undefined;

export const initialize: InitializeHook<{ libDir?: string }> = (data) => {
  if (data?.libDir) snapshot = pathToFileURL(data.libDir.endsWith('/') ? data.libDir : `${data.libDir}/`).href;
};

export const resolve: ResolveHook = async (specifier, context, nextResolve) => {
  const parent = context.parentURL;
  const fromLibrary = parent !== undefined && (parent.startsWith(LIBRARY) || (snapshot !== undefined && parent.startsWith(snapshot)));
  if (fromLibrary && SHARED.test(specifier)) {
    return nextResolve(specifier, { ...context, parentURL: BENCH });
  }
  const resolved = await nextResolve(specifier, context);
  if (snapshot && resolved.url.startsWith(LIBRARY)) return { ...resolved, url: snapshot + resolved.url.slice(LIBRARY.length) };
  return resolved;
};
