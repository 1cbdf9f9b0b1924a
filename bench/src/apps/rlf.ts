// Contenders "rlf-memory" and "rlf-redis" (BENCH_STORAGE): a small guard around rate-limiter-flexible,
// RateLimiterMemory or RateLimiterRedis on an ioredis client (configured as rlf's README shows).
import {
  Controller,
  Get,
  HttpException,
  HttpStatus,
  Inject,
  Injectable,
  Module,
  SetMetadata,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { APP_GUARD, Reflector } from '@nestjs/core';
import type { Request, Response } from 'express';
import { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { HOT_LIMIT, KEY_HEADER, QUOTE_LIMIT, STORAGE, quote, redisUrl, serve } from './common.js';

type LimiterName = 'quote' | 'hot';
type Limiters = Record<LimiterName, RateLimiterAbstract>;
const LIMITERS = Symbol('limiters');
const LIMITER_METADATA = 'bench:limiter';
const Limit = (name: LimiterName) => SetMetadata(LIMITER_METADATA, name);

async function createLimiters(): Promise<Limiters> {
  const points = { quote: QUOTE_LIMIT, hot: HOT_LIMIT };
  if (STORAGE === 'memory') {
    return {
      quote: new RateLimiterMemory({ keyPrefix: 'quote', points: points.quote, duration: 60 }),
      hot: new RateLimiterMemory({ keyPrefix: 'hot', points: points.hot, duration: 60 }),
    };
  }
  const storeClient = new Redis(redisUrl(), { enableOfflineQueue: false });
  await new Promise((resolve) => storeClient.once('ready', resolve));
  return {
    quote: new RateLimiterRedis({ storeClient, keyPrefix: 'quote', points: points.quote, duration: 60 }),
    hot: new RateLimiterRedis({ storeClient, keyPrefix: 'hot', points: points.hot, duration: 60 }),
  };
}

@Injectable()
class RateLimiterFlexibleGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    @Inject(LIMITERS) private readonly limiters: Limiters,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const name = this.reflector.get<LimiterName | undefined>(LIMITER_METADATA, context.getHandler());
    if (!name) return true;
    const http = context.switchToHttp();
    const request = http.getRequest<Request>();
    try {
      await this.limiters[name].consume((request.headers[KEY_HEADER] as string | undefined) ?? request.ip ?? '');
      return true;
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) throw rejection;
      http.getResponse<Response>().setHeader('Retry-After', Math.ceil(rejection.msBeforeNext / 1000));
      throw new HttpException('Too Many Requests', HttpStatus.TOO_MANY_REQUESTS);
    }
  }
}

@Controller()
class QuoteController {
  @Get('quote')
  @Limit('quote')
  quote() {
    return quote();
  }

  @Get('hot')
  @Limit('hot')
  hot() {
    return quote();
  }
}

@Module({
  controllers: [QuoteController],
  providers: [
    { provide: LIMITERS, useFactory: createLimiters },
    { provide: APP_GUARD, useClass: RateLimiterFlexibleGuard },
  ],
})
class AppModule {}

await serve(AppModule);
