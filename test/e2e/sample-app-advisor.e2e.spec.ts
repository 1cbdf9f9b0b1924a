import 'reflect-metadata';
import type { ExecutionContext, INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import type { AdvisorReport } from '../../lib/index.js';
import { ADMIN_KEY_COOKIE, ADMIN_KEY_HEADER, AdminGuard, DEMO_ADMIN_API_KEY } from '../../sample-app/admin/admin.guard.js';
import { AppModule, DASHBOARD_PATH } from '../../sample-app/app.module.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import { exact } from '../support/exact.js';

/**
 * The sample app with its limit advisor on (as `npm start` runs it): GET /quotes/:symbol is
 * observed, and the dashboard at /admin/rate-limits is behind AdminGuard.
 *
 * The quotes count anonymous clients by address (`ip:<address>`), so each client here connects
 * from an address of its own on the loopback network (Linux routes all of 127.0.0.0/8 to lo).
 */
const REPORT = `/${DASHBOARD_PATH}/report.json`;
const PAGE = `/${DASHBOARD_PATH}`;
/** Each client's address, and how many quotes it asks for. */
const CLIENTS: ReadonlyArray<readonly [address: string, requests: number]> = [
  ['127.0.0.11', 5],
  ['127.0.0.12', 3],
  ['127.0.0.13', 1],
];
const ADMIN = { [ADMIN_KEY_HEADER]: DEMO_ADMIN_API_KEY };

let redis: TestRedis;
/** The demo key is what these apps admit: whatever the environment running the tests says. */
const configuredKey = process.env.ADMIN_API_KEY;

beforeAll(async () => {
  delete process.env.ADMIN_API_KEY;
  redis = await startRedis();
});

afterAll(async () => {
  if (configuredKey !== undefined) process.env.ADMIN_API_KEY = configuredKey;
  await redis?.stop();
});

/** GET `path` from the local address `from`. */
function getFrom(port: number, path: string, from: string): Promise<{ status: number; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, localAddress: from, agent: false }, (response) => {
      response.resume();
      response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers }));
    });
    req.on('error', reject).end();
  });
}

describe.each(HTTP_PLATFORMS)('sample app advisor on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', ({ create }) => {
    let app: INestApplication;
    let port: number;
    let clock: FakeClock;
    const http = () => request(app.getHttpServer());

    beforeAll(async () => {
      await redis.flush();
      // 20 s into a minute: every request falls in one window, so each client is one client-window
      clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20));
      const moduleRef = await Test.createTestingModule({
        imports: [AppModule.register({ storage: create(clock), storagePolicy: exact({}), advisor: { clock: clock.now } })],
      }).compile();
      app = await createHttpApp(moduleRef, { platform });
      await app.listen(0, '127.0.0.1');
      port = (app.getHttpServer().address() as AddressInfo).port;
      for (const [address, count] of CLIENTS) {
        for (let i = 0; i < count; i++) {
          const response = await getFrom(port, '/quotes/AAPL', address);
          expect(response.status).toBe(200);
          expect(response.headers['ratelimit']).toBe(`"quotes";r=${99 - i};t=40`); // each address its own 100
        }
      }
    });

    afterAll(async () => {
      await app?.close();
    });

    it('refuses the report and the page without the admin key, or with a wrong one', async () => {
      await http().get(REPORT).expect(403);
      await http().get(PAGE).expect(403);
      await http().get(REPORT).set(ADMIN_KEY_HEADER, 'admin-demo-kez').expect(403);
      await http().get(REPORT).set(ADMIN_KEY_HEADER, `${DEMO_ADMIN_API_KEY}x`).expect(403);
      await http().get(PAGE).set('Cookie', `${ADMIN_KEY_COOKIE}=nope`).expect(403);
      // the key in another cookie's name or value is no key
      await http().get(PAGE).set('Cookie', `other=${DEMO_ADMIN_API_KEY}`).expect(403);
    });

    it('serves the report with the admin key: the quotes policy, with its clients and requests', async () => {
      const response = await http().get(REPORT).set(ADMIN).expect(200).expect('content-type', /application\/json/);
      expect(response.headers['cache-control']).toBe('no-store');
      const report = response.body as AdvisorReport;
      // the only policy that saw traffic: the dashboard's own requests are not limited, nor counted
      expect(report.policies.map((policy) => policy.name)).toEqual(['quotes']);
      const [quotes] = report.policies;
      expect(quotes).toMatchObject({ rate: '100/minute', limit: 100, windowSeconds: 60, algorithm: 'fixed-window', mode: 'enforce', estimate: 'exact' });
      expect(quotes.clients).toBe(CLIENTS.length);
      expect(quotes.requests).toBe(CLIENTS.reduce((sum, [, count]) => sum + count, 0));
      expect(quotes.denied).toBe(0);
      // identities as the route keys them, shown as they are (the sample does not redact them)
      expect(quotes.top.map(({ identity, requests }) => [identity, requests])).toEqual(CLIENTS.map(([address, count]) => [`ip:${address}`, count]));
      // a candidate of 2/minute would have refused the two clients that asked for more than 2
      const two = await http().get(REPORT).query({ candidates: '2' }).set(ADMIN).expect(200);
      const candidate = (two.body as AdvisorReport).policies[0].candidates.find((entry) => entry.limit === 2);
      expect(candidate).toMatchObject({ clientsDenied: 2 / 3, requestsDenied: (3 + 1) / 9, exact: true });
    });

    it('admits the admin_key cookie a browser sends, as the CLI and scripts send the header', async () => {
      const report = await http().get(REPORT).set('Cookie', `theme=dark; ${ADMIN_KEY_COOKIE}=${DEMO_ADMIN_API_KEY}`).expect(200);
      expect((report.body as AdvisorReport).policies[0].requests).toBe(9);
    });

    it('serves the dashboard page as HTML', async () => {
      for (const credentials of [ADMIN, { Cookie: `${ADMIN_KEY_COOKIE}=${DEMO_ADMIN_API_KEY}` }]) {
        const page = await http().get(PAGE).set(credentials).expect(200).expect('content-type', /^text\/html/);
        expect(page.text).toMatch(/^<!doctype html>/i);
        expect(page.headers['content-security-policy']).toMatch(/script-src 'nonce-/);
      }
    });
  });
});

describe('AdminGuard with ADMIN_API_KEY set', () => {
  const http = (headers: Record<string, string | string[]>) =>
    ({ getType: () => 'http', switchToHttp: () => ({ getRequest: () => ({ headers }) }) }) as unknown as ExecutionContext;
  let guard: AdminGuard;

  beforeAll(() => {
    process.env.ADMIN_API_KEY = 's3cret-admin-key-for-this-test';
    guard = new AdminGuard();
    delete process.env.ADMIN_API_KEY;
  });

  it('admits that key, in the header or the cookie, and no longer the demo key', () => {
    expect(guard.canActivate(http({ 'x-api-key': 's3cret-admin-key-for-this-test' }))).toBe(true);
    expect(guard.canActivate(http({ cookie: 'admin_key=s3cret-admin-key-for-this-test' }))).toBe(true);
    expect(guard.canActivate(http({ cookie: 'admin_key="s3cret-admin-key-for-this-test"; a=b' }))).toBe(true);
    // a wrong header does not hide a right cookie, nor the other way round
    expect(guard.canActivate(http({ 'x-api-key': 'wrong', cookie: 'admin_key=s3cret-admin-key-for-this-test' }))).toBe(true);
    expect(guard.canActivate(http({ 'x-api-key': DEMO_ADMIN_API_KEY }))).toBe(false);
    expect(guard.canActivate(http({ cookie: `admin_key=${DEMO_ADMIN_API_KEY}` }))).toBe(false);
    expect(guard.canActivate(http({ 'x-api-key': '' }))).toBe(false);
    expect(guard.canActivate(http({ cookie: 'admin_key=%E0%A4%A' }))).toBe(false); // malformed escape
    expect(guard.canActivate(http({}))).toBe(false);
  });

  it('admits nothing but HTTP requests', () => {
    const rpc = { getType: () => 'rpc' } as unknown as ExecutionContext;
    expect(guard.canActivate(rpc)).toBe(false);
  });
});
