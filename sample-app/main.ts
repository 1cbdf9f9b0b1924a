import 'reflect-metadata';
import { Logger, type DynamicModule, type INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { MicroserviceOptions } from '@nestjs/microservices';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import type { RateLimitModuleOptions } from '../lib/index.js';
import { AppModule } from './app.module.js';
import { quotesGrpcOptions } from './quotes/quotes-grpc.options.js';
import { setUpTelemetry } from './telemetry.js';

const logger = new Logger('SampleApp');

const port = Number(process.env.PORT ?? 3000);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  throw new Error(`PORT must be a port number, got "${process.env.PORT}"`);
}
// The gRPC server (quotes.proto). Not 0: Nest does not say which port the gRPC server got, so it could not be logged.
const grpcPort = Number(process.env.GRPC_PORT ?? 50051);
if (!Number.isInteger(grpcPort) || grpcPort < 1 || grpcPort > 65_535) {
  throw new Error(`GRPC_PORT must be a port number from 1 to 65535, got "${process.env.GRPC_PORT}"`);
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
// advisor: the limit advisor, with its dashboard at /admin/rate-limits (admin key: ADMIN_API_KEY)
const app = await createApp(AppModule.register({ storage, storagePolicy, telemetry, advisor: true }));
// Closes the Redis connection on SIGTERM/SIGINT, so the process can exit.
app.enableShutdownHooks();
// gRPC `Quotes` beside HTTP. inheritAppConfig: the app's global guard (RateLimitModule's) and
// filter apply to the calls as to HTTP requests, so GetQuote draws on GET /quotes/:symbol's budget.
const grpc = quotesGrpcOptions(grpcPort);
app.connectMicroservice<MicroserviceOptions>(grpc, { inheritAppConfig: true });
// init first: the modules' start-up (the rate-limit storage, its checks) is done before a call can come in
await app.init();
await app.startAllMicroservices();
// Behind a load balancer, also trust it: Express's 'trust proxy' setting, or the `trustProxy` option of
// `new FastifyAdapter()` (the proxy's address: Fastify takes no hop count). Otherwise every client
// shares the proxy's IP budget. Fastify listens on localhost only unless given a host, as it does by default.
await app.listen(port);

logger.log(`Listening on ${await app.getUrl()} (${platform === 'fastify' ? 'Fastify' : 'Express'})`);
logger.log(`gRPC on ${grpc.options.url} (package quotes, ${grpc.options.protoPath})`);
logger.log(`Limit advisor dashboard: ${await app.getUrl()}/admin/rate-limits (x-api-key header or admin_key cookie: ADMIN_API_KEY)`);
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
