import 'reflect-metadata';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import request from 'supertest';
import { MemoryStorage, RateLimit, type RateLimitModuleOptions, type RateLimitResult, type RateLimitStorage } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { createScenarioApp, HTTP_PLATFORMS } from '../support/scenario-app.js';

/** At the start of a minute: a denied request waits exactly 60 s. */
const onTheMinute = () => new MemoryStorage({ clock: new FakeClock().now });

@Controller()
class ProblemController {
  @Get('quota')
  @RateLimit(['2/minute', '100/day'], { bucket: 'quota' })
  quota() {
    return { ok: true };
  }

  @Get('guarded')
  @RateLimit('5/minute', { onStorageError: 'deny' })
  guarded() {
    return { ok: true };
  }
}

class DownStorage implements RateLimitStorage {
  check(): RateLimitResult {
    throw new Error('connection refused');
  }
}

describe.each(HTTP_PLATFORMS)('problem details (RFC 9457) on %s', (platform) => {
  let app: INestApplication | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });
  const serve = async (options: RateLimitModuleOptions) => {
    app = await createScenarioApp([ProblemController], options, { platform });
    return request(app.getHttpServer());
  };

  it('answers a 429 as application/problem+json with the quota-exceeded type and the violated policies', async () => {
    const http = await serve({ problemDetails: true, storage: onTheMinute() });
    await http.get('/quota').expect(200);
    await http.get('/quota').expect(200);
    const denied = await http.get('/quota').expect(429);
    expect(denied.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(denied.headers['retry-after']).toBe('60');
    expect(JSON.parse(denied.text)).toEqual({
      type: 'https://iana.org/assignments/http-problem-types#quota-exceeded',
      title: 'Too Many Requests',
      status: 429,
      detail: 'Rate limit exceeded',
      'violated-policies': ['quota-1m'],
      retryAfter: 60,
    });
  });

  it('answers the deny policy\'s 503 as a problem too', async () => {
    const http = await serve({ problemDetails: true, storage: new DownStorage() });
    const unavailable = await http.get('/guarded').expect(503);
    expect(unavailable.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(unavailable.text)).toMatchObject({ type: 'about:blank', title: 'Service Unavailable', status: 503, retryAfter: 1 });
  });

  it('keeps the default JSON body when off', async () => {
    const http = await serve({ storage: onTheMinute() });
    await http.get('/quota');
    await http.get('/quota');
    const denied = await http.get('/quota').expect(429);
    expect(denied.headers['content-type']).toMatch(/^application\/json/);
    expect(denied.body).toEqual({ statusCode: 429, error: 'Too Many Requests', message: 'Rate limit exceeded', retryAfter: 60 });
  });
});
