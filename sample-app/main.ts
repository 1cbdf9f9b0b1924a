import 'reflect-metadata';
import { Logger, type DynamicModule, type INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import type { RateLimitModuleOptions } from '../lib/index.js';
import { AppModule } from './app.module.js';
import { setUpTelemetry } from './telemetry.js';

const logger = new Logger('SampleApp');

const port = Number(process.env.PORT ?? 3000);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  throw new Error(`PORT must be a port number, got "${process.env.PORT}"`);
}

// Express by default; SAMPLE_ADAPTER=fastify serves the same app on Fastify.
const platform = process.env.SAMPLE_ADAPTER ?? 'express';
if (platform !== 'express' && platform !== 'fastify') {
  throw new Error(`SAMPLE_ADAPTER must be "express" or "fastify", got "${platform}"`);
}

// Redis when several instances must share one budget per client; memory for a single process.
const redisUrl = process.env.REDIS_URL;
const storage: RateLimitModuleOptions['storage'] = redisUrl ? { type: 'redis', url: redisUrl } : { type: 'memory' };
// What an outage of that storage does: STORAGE_TIMEOUT (ms) and ON_STORAGE_ERROR (allow, deny or memory).
const storagePolicy: Pick<RateLimitModuleOptions, 'storageTimeout' | 'onStorageError'> = {};
if (process.env.STORAGE_TIMEOUT) storagePolicy.storageTimeout = Number(process.env.STORAGE_TIMEOUT);
if (process.env.ON_STORAGE_ERROR) storagePolicy.onStorageError = process.env.ON_STORAGE_ERROR as RateLimitModuleOptions['onStorageError'];

// OpenTelemetry before the app: the rate-limit module takes its meter from the global provider when it
// initializes, and one registered later is never seen. GET /metrics serves what it collects.
const telemetry = setUpTelemetry();
const app = await createApp(AppModule.register({ storage, storagePolicy, telemetry }));
// Closes the Redis connection on SIGTERM/SIGINT, so the process can exit.
app.enableShutdownHooks();
// Behind a load balancer, also trust it: Express's 'trust proxy' setting, or the `trustProxy` option of
// `new FastifyAdapter()` (the proxy's address: Fastify takes no hop count). Otherwise every client
// shares the proxy's IP budget. Fastify listens on localhost only unless given a host, as it does by default.
await app.listen(port);

logger.log(`Listening on ${await app.getUrl()} (${platform === 'fastify' ? 'Fastify' : 'Express'})`);
logger.log(`Rate-limit storage: ${redisUrl ? `Redis at ${describeRedis(redisUrl)}` : 'in memory (this process only)'}`);

/** The app on the platform SAMPLE_ADAPTER names; Fastify is loaded only when asked for. */
async function createApp(appModule: DynamicModule): Promise<INestApplication> {
  if (platform === 'express') return NestFactory.create(appModule);
  const { FastifyAdapter } = await import('@nestjs/platform-fastify');
  return NestFactory.create<NestFastifyApplication>(appModule, new FastifyAdapter());
}

/** The Redis URL without its credentials, which have no place in logs. */
function describeRedis(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname === '/' ? '' : parsed.pathname}`;
  } catch {
    return '(unparseable REDIS_URL)';
  }
}
