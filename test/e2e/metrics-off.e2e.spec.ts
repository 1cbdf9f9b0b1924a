import 'reflect-metadata';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import request from 'supertest';
import { RateLimit } from '../../lib/index.js';
import { RATE_LIMIT_METRICS, type RateLimitMetrics } from '../../lib/observability/rate-limit-metrics.js';
import { registerTestMetrics } from '../support/metrics-reader.js';
import { createScenarioApp, HTTP_PLATFORMS } from '../support/scenario-app.js';

@Controller()
class QuietController {
  @Get('quiet')
  @RateLimit('1/minute', { mode: 'shadow' })
  quiet() {
    return { ok: true };
  }

  @Get('strict')
  @RateLimit('1/minute')
  strict() {
    return { ok: true };
  }
}

describe.each(HTTP_PLATFORMS)('without an OpenTelemetry SDK, on %s', (platform) => {
  let app: INestApplication;
  beforeEach(async () => {
    app = await createScenarioApp([QuietController], {}, { platform });
  });
  afterEach(() => app.close());

  it('records nothing and fails nothing: the instruments are never created', async () => {
    expect(app.get<RateLimitMetrics>(RATE_LIMIT_METRICS).enabled).toBe(false);
    // an SDK registered after the module started sees nothing from it
    const telemetry = registerTestMetrics();
    try {
      await request(app.getHttpServer()).get('/strict').expect(200);
      await request(app.getHttpServer()).get('/strict').expect(429);
      await request(app.getHttpServer()).get('/quiet').expect(200);
      await request(app.getHttpServer()).get('/quiet').expect(200);
      expect(await telemetry.points('ratelimit.requests')).toEqual([]);
      expect(await telemetry.points('ratelimit.circuit.state')).toEqual([]);
    } finally {
      await telemetry.stop();
    }
  });
});
