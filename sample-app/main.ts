import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { RateLimitModuleOptions } from '../lib/index.js';
import { AppModule } from './app.module.js';

const logger = new Logger('SampleApp');

const port = Number(process.env.PORT ?? 3000);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  throw new Error(`PORT must be a port number, got "${process.env.PORT}"`);
}

// Redis when several instances must share one budget per client; memory for a single process.
const redisUrl = process.env.REDIS_URL;
const storage: RateLimitModuleOptions['storage'] = redisUrl ? { type: 'redis', url: redisUrl } : { type: 'memory' };

const app = await NestFactory.create(AppModule.register({ storage }));
// Closes the Redis connection on SIGTERM/SIGINT, so the process can exit.
app.enableShutdownHooks();
// Behind a load balancer, also set Express's 'trust proxy', or every client shares the proxy's IP budget.
await app.listen(port);

logger.log(`Listening on ${await app.getUrl()}`);
logger.log(`Rate-limit storage: ${redisUrl ? `Redis at ${describeRedis(redisUrl)}` : 'in memory (this process only)'}`);

/** The Redis URL without its credentials, which have no place in logs. */
function describeRedis(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname === '/' ? '' : parsed.pathname}`;
  } catch {
    return '(unparseable REDIS_URL)';
  }
}
