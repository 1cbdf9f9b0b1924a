// Contenders "throttler-memory" and "throttler-redis" (BENCH_STORAGE): @nestjs/throttler with its
// default in-memory storage, or ThrottlerStorageRedisService from @nest-lab/throttler-storage-redis.
import { Controller, Get, Injectable, Module } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { Throttle, ThrottlerGuard, ThrottlerModule } from '@nestjs/throttler';
import { ThrottlerStorageRedisService } from '@nest-lab/throttler-storage-redis';
import { HOT_LIMIT, KEY_HEADER, QUOTE_LIMIT, STORAGE, quote, redisUrl, serve } from './common.js';

/** Tracks clients by their API key, as the other contenders do (the documented way: override getTracker). */
@Injectable()
class ApiKeyThrottlerGuard extends ThrottlerGuard {
  protected override async getTracker(req: Record<string, any>): Promise<string> {
    return req.headers[KEY_HEADER] ?? req.ip;
  }
}

@Controller()
class QuoteController {
  @Get('quote')
  quote() {
    return quote();
  }

  @Get('hot')
  @Throttle({ default: { limit: HOT_LIMIT, ttl: 60_000 } })
  hot() {
    return quote();
  }
}

const throttlers = [{ ttl: 60_000, limit: QUOTE_LIMIT }];

@Module({
  imports: [
    ThrottlerModule.forRoot(
      STORAGE === 'redis' ? { throttlers, storage: new ThrottlerStorageRedisService(redisUrl()) } : throttlers,
    ),
  ],
  controllers: [QuoteController],
  providers: [{ provide: APP_GUARD, useClass: ApiKeyThrottlerGuard }],
})
class AppModule {}

await serve(AppModule);
