import type { ResolveHook } from 'node:module';

/** Packages the library shares with its host app: peers, and ioredis (same version as the competitors'). */
const SHARED = /^(?:@nestjs\/(?:common|core|platform-express)|reflect-metadata|rxjs|ioredis)(?:\/|$)/;
const LIBRARY = new URL('../../dist/lib/', import.meta.url).href;
const BENCH = new URL('../package.json', import.meta.url).href;

export const resolve: ResolveHook = (specifier, context, nextResolve) =>
  context.parentURL?.startsWith(LIBRARY) && SHARED.test(specifier)
    ? nextResolve(specifier, { ...context, parentURL: BENCH })
    : nextResolve(specifier, context);
