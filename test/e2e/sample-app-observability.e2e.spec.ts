import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { metrics } from '@opentelemetry/api';
import request from 'supertest';
import type { RateLimitStorage } from '../../lib/index.js';
import { AppModule } from '../../sample-app/app.module.js';
import { routeId } from '../../lib/rules/route-id.js';
import { setUpTelemetry } from '../../sample-app/telemetry.js';
import { expectTooManyRequests, remaining } from '../support/assertions.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, HTTP_PLATFORMS, storageKinds, type HttpPlatform } from '../support/scenario-app.js';
import { exact } from '../support/exact.js';

/**
 * The sample app's observability routes: `GET /metrics` (Prometheus text from the OpenTelemetry
 * SDK, the limiter's instruments among it) and `GET /search?q=` (2/minute per IP in shadow mode).
 *
 * The telemetry is set up once, here, before any app of this file is created: the rate-limit
 * module gets its meter when it initializes. Every app of the file reports to that one provider
 * (it can be registered once per process), so its counters add up across tests: each test reads
 * the metrics before and after, and asserts exact lines with the values it expects.
 */
const telemetry = setUpTelemetry();

const CLIENT = '203.0.113.7';
const OTHER_CLIENT = '203.0.113.8';
/** 20 s into a minute: fixed windows end at :00, 40 s away. */
const START = Date.UTC(2030, 0, 1, 9, 30, 20);
const SCOPE = 'otel_scope_name="nestjs-rate-limiting"';
const ITEMS = 'ItemsController.findAll';
const SEARCH = 'SearchController.search';

/** One sample line of the Prometheus text format. */
interface Sample {
  readonly line: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

class Scrape {
  readonly samples: readonly Sample[];

  constructor(readonly text: string) {
    this.samples = text
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('#'))
      .map((line) => {
        const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
        if (!match) throw new Error(`not a Prometheus sample line: ${line}`);
        const labels: Record<string, string> = {};
        for (const [, name, value] of (match[2] ?? '').matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[name] = value;
        return { line, name: match[1], labels, value: Number(match[3]) };
      });
  }

  /** The one sample of `name` whose labels include `labels`, or undefined. */
  sample(name: string, labels: Record<string, string>): Sample | undefined {
    const found = this.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    if (found.length > 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}:\n${found.map((s) => s.line).join('\n')}`);
    return found[0];
  }

  /** The value of that sample; 0 when there is none (a counter nothing has added to yet). */
  value(name: string, labels: Record<string, string>): number {
    return this.sample(name, labels)?.value ?? 0;
  }

  requests(policy: string, outcome: string): number {
    return this.value('ratelimit_requests_total', { ratelimit_policy: policy, ratelimit_outcome: outcome });
  }

  nearLimit(policy: string): number {
    return this.value('ratelimit_near_limit_total', { ratelimit_policy: policy });
  }
}

/** The `ratelimit_requests_total` line of one policy and outcome, exactly as Prometheus gets it. */
function requestsLine(policy: string, outcome: string, value: number): string {
  return `ratelimit_requests_total{ratelimit_policy="${policy}",ratelimit_outcome="${outcome}",${SCOPE}} ${value}`;
}

function nearLimitLine(policy: string, value: number): string {
  return `ratelimit_near_limit_total{ratelimit_policy="${policy}",${SCOPE}} ${value}`;
}

let redis: TestRedis;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await redis?.stop();
});

/** The sample app with this file's telemetry, trusting the proxy: X-Forwarded-For names the client. */
async function startSampleApp(platform: HttpPlatform, storage: RateLimitStorage, withTelemetry = true): Promise<INestApplication> {
  const moduleRef = await Test.createTestingModule({
    imports: [AppModule.register({ storage, storagePolicy: exact({}), ...(withTelemetry ? { telemetry } : {}) })],
  }).compile();
  return createHttpApp(moduleRef, { platform, trustProxy: true });
}

describe('setUpTelemetry', () => {
  it('registers the global MeterProvider once, and returns that one on every later call', () => {
    expect(setUpTelemetry()).toBe(telemetry);
    expect(metrics.getMeterProvider()).toBe(telemetry.provider);
  });
});

describe.each(HTTP_PLATFORMS)('sample app observability on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', ({ name, create }) => {
    const apps: INestApplication[] = [];
    let clock: FakeClock;

    async function start(withTelemetry = true): Promise<INestApplication> {
      const app = await startSampleApp(platform, create(clock), withTelemetry);
      apps.push(app);
      return app;
    }

    let app: INestApplication;
    const get = (path: string, ip = CLIENT, on = app) => request(on.getHttpServer()).get(path).set('X-Forwarded-For', ip);

    async function scrape(on = app): Promise<Scrape> {
      const response = await get('/metrics', CLIENT, on).expect(200);
      return new Scrape(response.text);
    }

    beforeEach(async () => {
      await redis.flush();
      clock = new FakeClock(START);
      app = await start();
    });

    afterEach(async () => {
      for (const started of apps.splice(0)) await started.close();
    });

    describe('GET /metrics', () => {
      it('answers Prometheus text, and is not rate limited', async () => {
        for (let i = 0; i < 30; i++) {
          const response = await get('/metrics').expect(200);
          expect(response.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
          expect(response.headers['ratelimit']).toBeUndefined();
          expect(response.headers['ratelimit-policy']).toBeUndefined();
          expect(response.text).toMatch(/^# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info\{/);
        }
        // no policy of its own: it is never counted
        expect((await scrape()).samples.filter((s) => s.labels.ratelimit_policy?.startsWith('MetricsController'))).toEqual([]);
      });

      it('after a 429, shows ratelimit_requests_total with ratelimit_outcome="denied" for its policy', async () => {
        const before = await scrape();
        for (let i = 0; i < 5; i++) await get('/items').expect(200);
        expectTooManyRequests(await get('/items'));

        const after = await scrape();
        expect(after.text).toContain('# TYPE ratelimit_requests_total counter\n');
        expect(after.text.split('\n')).toEqual(
          expect.arrayContaining([
            requestsLine(ITEMS, 'denied', before.requests(ITEMS, 'denied') + 1),
            requestsLine(ITEMS, 'allowed', before.requests(ITEMS, 'allowed') + 5),
            // r=4, 3, 2, 1, 0 of q=5: only the last left under 20% of the quota
            nearLimitLine(ITEMS, before.nearLimit(ITEMS) + 1),
          ]),
        );
        expect(after.requests(ITEMS, 'shadow_denied')).toBe(before.requests(ITEMS, 'shadow_denied'));
        // the six checks were storage calls, timed under this storage's kind
        const storageCalls = (scraped: Scrape) => scraped.value('ratelimit_storage_duration_count', { ratelimit_storage: name });
        expect(storageCalls(after)).toBeGreaterThanOrEqual(storageCalls(before) + 6);
        expect(after.sample('ratelimit_circuit_state', { ratelimit_storage: name })?.value).toBe(0);
      });

      it('is absent from an app set up without telemetry', async () => {
        const bare = await start(false);
        await get('/metrics', CLIENT, bare).expect(404);
      });
    });

    describe('GET /search?q= (2/minute per IP, shadow mode)', () => {
      it('never answers 429: would-be denials go through with r=0 and count as shadow_denied', async () => {
        const before = await scrape();
        for (let i = 0; i < 5; i++) {
          const response = await get('/search?q=corp').expect(200);
          expect(response.body).toEqual({
            query: 'corp',
            results: [
              { symbol: 'ACME', name: 'Acme Corporation' },
              { symbol: 'INTC', name: 'Intel Corporation' },
              { symbol: 'MSFT', name: 'Microsoft Corporation' },
            ],
          });
          // the headers show the limit to come, as if enforced
          expect(response.headers['ratelimit-policy']).toBe(`"${SEARCH}";q=2;w=60`);
          expect(response.headers['ratelimit']).toBe(`"${SEARCH}";r=${Math.max(1 - i, 0)};t=40`);
          expect(response.headers['retry-after']).toBeUndefined(); // a 200 asks no one to wait
        }

        const after = await scrape();
        expect(after.text.split('\n')).toEqual(
          expect.arrayContaining([
            requestsLine(SEARCH, 'allowed', before.requests(SEARCH, 'allowed') + 2),
            requestsLine(SEARCH, 'shadow_denied', before.requests(SEARCH, 'shadow_denied') + 3),
            nearLimitLine(SEARCH, before.nearLimit(SEARCH) + 1),
          ]),
        );
        expect(after.requests(SEARCH, 'denied')).toBe(before.requests(SEARCH, 'denied'));
      });

      it('charges as if enforced: per IP, and a fresh budget when the window ends', async () => {
        for (let i = 0; i < 3; i++) await get('/search?q=ibm').expect(200);
        expect(remaining(await get('/search?q=ibm').expect(200))).toBe(0);
        expect(remaining(await get('/search?q=ibm', OTHER_CLIENT).expect(200))).toBe(1); // another IP, another budget

        clock.advance(39_999);
        expect(remaining(await get('/search?q=ibm').expect(200))).toBe(0);
        clock.advance(1);
        const fresh = await get('/search?q=ibm').expect(200);
        expect(fresh.headers['ratelimit']).toBe(`"${SEARCH}";r=1;t=60`);
        expect(fresh.body).toEqual({ query: 'ibm', results: [{ symbol: 'IBM', name: 'International Business Machines' }] });
      });

      it('still charges a request the handler refuses (400: no q)', async () => {
        const bad = await get('/search').expect(400);
        expect(bad.body).toMatchObject({ statusCode: 400, message: 'q must be 1-50 characters, e.g. /search?q=corp' });
        expect(remaining(bad)).toBe(1);
        expect(remaining(await get('/search?q=a').expect(200))).toBe(0);
      });

      if (name === 'redis') {
        it('charges the shared budget: a second instance sees the first one\'s requests, and lets its own over-limit request through', async () => {
          const second = await start();
          const before = await scrape();
          await get('/search?q=acme').expect(200);
          await get('/search?q=acme').expect(200);

          const elsewhere = await get('/search?q=acme', CLIENT, second).expect(200);
          expect(elsewhere.headers['ratelimit']).toBe(`"${SEARCH}";r=0;t=40`);
          expect(elsewhere.body).toEqual({ query: 'acme', results: [{ symbol: 'ACME', name: 'Acme Corporation' }] });
          // both instances report to this process's one provider
          expect((await scrape(second)).text.split('\n')).toContain(requestsLine(SEARCH, 'shadow_denied', before.requests(SEARCH, 'shadow_denied') + 1));
          const keys = await redis.client().keys(`rl:*:${routeId(SEARCH)}:*`);
          expect(keys).toEqual([`rl:{ip:${CLIENT}}:${routeId(SEARCH)}:fw1m`]);
        });
      }
    });
  });
});
