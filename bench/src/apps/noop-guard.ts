// Reference "bare+guard": no limiter, but a global guard that admits every request at once. Any
// guard-based limiter pays what Nest spends to run a guard; this shows that floor on memory.
import { Injectable, Module, type CanActivate } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { PlainQuoteController, serve } from './common.js';

@Injectable()
class AdmitAll implements CanActivate {
  canActivate(): boolean {
    return true;
  }
}

@Module({ controllers: [PlainQuoteController], providers: [{ provide: APP_GUARD, useClass: AdmitAll }] })
class AppModule {}

await serve(AppModule);
