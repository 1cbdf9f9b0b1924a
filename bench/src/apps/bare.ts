// Contender "bare": the same routes with no limiter at all, the reference for every ratio.
import { Controller, Get, Module } from '@nestjs/common';
import { quote, serve } from './common.js';

@Controller()
class QuoteController {
  @Get('quote')
  quote() {
    return quote();
  }

  @Get('hot')
  hot() {
    return quote();
  }
}

@Module({ controllers: [QuoteController] })
class AppModule {}

await serve(AppModule);
