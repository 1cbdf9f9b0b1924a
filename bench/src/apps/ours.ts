// Contenders "ours-memory" and "ours-redis" (BENCH_STORAGE), and both with the limit advisor on (BENCH_ADVISOR=1): this library, built at ../dist/esm (the package's ES module build).
import { Controller, Get, Module } from '@nestjs/common';
import { HeaderKeyResolver, RateLimit, RateLimitModule } from '../../../dist/esm/index.js';
import { HOT_LIMIT, KEY_HEADER, QUOTE_LIMIT, STORAGE, quote, redisUrl, serve } from './common.js';

const key = new HeaderKeyResolver(KEY_HEADER);

@Controller()
class QuoteController {
  @Get('quote')
  @RateLimit(`${QUOTE_LIMIT}/minute`, { key })
  quote() {
    return quote();
  }

  @Get('hot')
  @RateLimit(`${HOT_LIMIT}/minute`, { key })
  hot() {
    return quote();
  }
}

@Module({
  imports: [
    RateLimitModule.forRoot({
      storage: STORAGE === 'redis' ? { type: 'redis', url: redisUrl() } : { type: 'memory', maxKeys: 200_000 },
      advisor: process.env.BENCH_ADVISOR === '1',
    }),
  ],
  controllers: [QuoteController],
})
class AppModule {}

await serve(AppModule);
