// Shared by every bench app: the payload, the settings the runner passes in the environment, and
// the bootstrap. Each app is a separate process started by the runner (see ../run.ts).
import 'reflect-metadata';
import { Controller, Get, type INestApplication, type Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (bench apps are started by bench/dist/run.js)`);
  return value;
}

/** `memory` or `redis`; apps without a storage ignore it. */
export const STORAGE = process.env.BENCH_STORAGE === 'redis' ? 'redis' : 'memory';
export const redisUrl = () => required('REDIS_URL');
/** Limit per minute of GET /quote: high enough that scenario A and B never see a 429. */
export const QUOTE_LIMIT = Number(process.env.BENCH_QUOTE_LIMIT ?? 1_000_000);
/** Limit per minute of GET /hot: scenario C's single client floods far past it. */
export const HOT_LIMIT = Number(process.env.BENCH_HOT_LIMIT ?? 10);
/** The client identity of every limiter. */
export const KEY_HEADER = 'x-api-key';

/** The small JSON body of both routes. */
export function quote() {
  return { symbol: 'ACME', price: 123.45, currency: 'USD' };
}

/** `GET /quote` with no limit of its own: the route of the reference apps (behind their guards). */
@Controller()
export class PlainQuoteController {
  @Get('quote')
  quote() {
    return quote();
  }
}

/** Nest's HTTP adapter: Express, or Fastify when the runner sets BENCH_PLATFORM=fastify. */
export const PLATFORM = process.env.BENCH_PLATFORM === 'fastify' ? 'fastify' : 'express';

/**
 * Starts the app on 127.0.0.1:$PORT and tells the runner (over IPC) that it is listening. Fastify's
 * adapter is imported only when asked for, so the Express apps never load it.
 */
export async function serve(module: Type): Promise<void> {
  const options = { logger: ['error', 'warn'] as ('error' | 'warn')[] };
  let app: INestApplication;
  if (PLATFORM === 'fastify') {
    const { FastifyAdapter } = await import('@nestjs/platform-fastify');
    app = await NestFactory.create(module, new FastifyAdapter(), options);
  } else {
    app = await NestFactory.create(module, options);
  }
  await app.listen(Number(required('PORT')), '127.0.0.1');
  process.send?.({ ready: true });
  // The runner stops an app with SIGTERM; closing lets storages quit their Redis clients. Leaving
  // through process.exit also makes `node --cpu-prof` write its profile (scenario P); a SIGKILL would not.
  process.once('SIGTERM', () => {
    const cutoff = setTimeout(() => process.exit(0), 1_000);
    app.close().finally(() => {
      clearTimeout(cutoff);
      process.exit(0);
    });
  });
}
