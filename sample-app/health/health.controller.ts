import { Controller, Get } from '@nestjs/common';
import { SkipRateLimit } from '../../lib/index.js';

@Controller('health')
export class HealthController {
  // Load balancers and orchestrators poll this; throttling it would get healthy instances killed.
  @Get()
  @SkipRateLimit()
  check(): { status: 'ok' } {
    return { status: 'ok' };
  }
}
