import { Injectable, type Type } from '@nestjs/common';
import { DiscoveryService } from '@nestjs/core';
import { RateLimitExceptionFilter } from '../filters/rate-limit-exception.filter.js';

/** Nest's metadata keys (the same since Nest 5): a `@WebSocketGateway()` class, a class's `@UseFilters()`. */
const GATEWAY_METADATA = 'websockets:is_gateway';
const EXCEPTION_FILTERS_METADATA = '__exceptionFilters__';

/**
 * Nest applies no app-wide exception filter (`APP_FILTER`, `useGlobalFilters`) to WebSocket
 * gateways, so the module's filter would never see a refused message: the client would get
 * Nest's `{ status: 'error', message: 'Internal server error' }`, and the refusal would be
 * logged as an error. This gives every gateway the module's filter as the first of its class
 * filters, which Nest consults last: filters of the gateway or the handler still come first, as
 * a controller's do over app filters on HTTP. It catches only the two refusals.
 *
 * It runs when the providers are built, before `app.init()` binds the gateways' handlers (and
 * reads their filters). A gateway that already lists the filter is left alone.
 */
@Injectable()
export class WsGatewayFilters {
  constructor(discovery: DiscoveryService) {
    const filter = new RateLimitExceptionFilter();
    for (const { metatype } of discovery.getProviders()) {
      if (typeof metatype !== 'function' || !Reflect.hasMetadata(GATEWAY_METADATA, metatype)) continue;
      const filters: unknown[] = Reflect.getMetadata(EXCEPTION_FILTERS_METADATA, metatype) ?? [];
      if (filters.some((f) => f === RateLimitExceptionFilter || f instanceof RateLimitExceptionFilter)) continue;
      Reflect.defineMetadata(EXCEPTION_FILTERS_METADATA, [filter, ...filters], metatype as Type);
    }
  }
}
