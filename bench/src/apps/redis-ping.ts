// Reference "bare+redis-ping": no limiter, but a guard that awaits one Redis PING per request on an
// auto-pipelined ioredis client. It is the floor of any limiter that makes one Redis round trip,
// and it shows what merely awaiting Redis does to throughput on this machine (it can be *faster*
// than bare: requests that wait are answered in batches).
import { Injectable, Module, type CanActivate } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { Redis } from 'ioredis';
import { PlainQuoteController, redisUrl, serve } from './common.js';

const redis = new Redis(redisUrl(), { enableAutoPipelining: true });
/** Named, so that the profile scenario can tell the guard's frames (harness/profile.ts). */
const admit = () => true;

@Injectable()
class PingGuard implements CanActivate {
  canActivate(): Promise<boolean> {
    return redis.ping().then(admit);
  }
}

@Module({ controllers: [PlainQuoteController], providers: [{ provide: APP_GUARD, useClass: PingGuard }] })
class AppModule {}

await new Promise((resolve) => redis.once('ready', resolve));
await serve(AppModule);
