/**
 * The limit advisor's dashboard served by a real app (lib/advisor/dashboard.controller.ts), on
 * Express and Fastify, over memory and Redis storage, with the app's own guard in front of it:
 * real traffic makes the report, and a headless Chromium shows it. The page-only spec
 * (advisor-dashboard-page.e2e.spec.ts) proves the drawing against a fixture; this one proves the
 * route: who may see it, what it sends, that the figures are the traffic's, and that the
 * dashboard neither is limited nor counts itself.
 */
import 'reflect-metadata';
import { Controller, Get, Injectable, type CanActivate, type ExecutionContext, type INestApplication } from '@nestjs/common';
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { RateLimit, type AdvisorPolicyReport, type AdvisorReport, type RateLimitModuleOptions, type RateLimitStorage } from '../../lib/index.js';
import { describeWithBrowser, launchBrowser } from '../support/browser.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, storageKinds, type HttpPlatform } from '../support/scenario-app.js';
import { memoryTarget, type StorageTarget } from '../support/storage-targets.js';

const DASHBOARD = '/admin/rate-limits';
const REPORT_JSON = `${DASHBOARD}/report.json`;
const POLICY = 'QuotesController.quotes';
const SCREENSHOT = '/tmp/advisor-dashboard-app.png';
const ADMIN_KEY = { 'x-admin-key': 'secret' };

const byClient = (context: ExecutionContext) => String(context.switchToHttp().getRequest().headers['x-client']);

@Controller()
class QuotesController {
  @Get('quotes')
  @RateLimit('10/minute', { key: byClient })
  quotes() {
    return { ok: true };
  }
}

/** The app's own guard: the admin key in a header, or the admin cookie; anything else is refused (Nest: 403). */
@Injectable()
class AdminGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const { headers } = context.switchToHttp().getRequest<{ headers: Record<string, string | string[] | undefined> }>();
    if (headers['x-admin-key'] === 'secret') return true;
    return String(headers.cookie ?? '')
      .split(';')
      .some((pair) => pair.trim() === 'admin=secret');
  }
}

/**
 * Requests per client, all in one window of the 10/minute limit: three light clients and one
 * over it. Names no page text has by chance, so "not shown" means something.
 */
const TRAFFIC = { 'client-heavy-hal': 14, 'client-light-cy': 6, 'client-light-bob': 4, 'client-light-ann': 3 } as const;
const IDENTITIES = Object.keys(TRAFFIC);
const HEAVIEST_FIRST = Object.entries(TRAFFIC).sort((a, b) => b[1] - a[1]);
const REQUESTS = Object.values(TRAFFIC).reduce((sum, n) => sum + n, 0); // 27
const LIMIT = 10;
/** Past the limit: the heavy client's 11th to 14th. */
const DENIED = Object.values(TRAFFIC).reduce((sum, n) => sum + Math.max(0, n - LIMIT), 0); // 4
/** Share of clients the current limit refused at least once: 1 of 4. */
const CLIENTS_DENIED = Object.values(TRAFFIC).filter((n) => n > LIMIT).length / IDENTITIES.length;

/** The page's figures, as an en-US browser shows them. */
const count = (n: number) => new Intl.NumberFormat('en-US').format(n);
const percent = (x: number) => new Intl.NumberFormat('en-US', { style: 'percent', maximumSignificantDigits: 2 }).format(x);

let redis: TestRedis;
/** One browser for the file, launched by the first suite that needs it. */
let browser: Browser | undefined;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await browser?.close();
  await redis?.stop();
});

interface RunningApp {
  app: INestApplication;
  origin: string;
  storage: RateLimitStorage;
  close(): Promise<void>;
}

/** The app around QuotesController, listening on 127.0.0.1 on a free port. */
async function startApp(platform: HttpPlatform, storage: RateLimitStorage, options: RateLimitModuleOptions): Promise<RunningApp> {
  const app = await createScenarioApp([QuotesController], { storage, ...options }, { platform, forceCloseConnections: true });
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as AddressInfo;
  return {
    app,
    origin: `http://127.0.0.1:${port}`,
    storage,
    close: async () => {
      await app.close();
      await storage.close?.();
    },
  };
}

describe.each(HTTP_PLATFORMS)('the advisor dashboard of an app on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', (target: StorageTarget) => {
    let running: RunningApp;
    let origin: string;
    const get = (path: string, headers: Record<string, string> = {}) => fetch(`${origin}${path}`, { headers });
    const report = async (query = ''): Promise<AdvisorReport> => {
      const response = await get(`${REPORT_JSON}${query}`, ADMIN_KEY);
      expect(response.status).toBe(200);
      return (await response.json()) as AdvisorReport;
    };
    const policyOf = (r: AdvisorReport): AdvisorPolicyReport => {
      const found = r.policies.find((p) => p.name === POLICY);
      if (!found) throw new Error(`no policy ${POLICY} in ${r.policies.map((p) => p.name).join(', ')}`);
      return found;
    };

    beforeAll(async () => {
      await redis.flush();
      const clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 5));
      running = await startApp(platform, target.create(clock), { advisor: { clock: clock.now }, dashboard: { path: 'admin/rate-limits', guard: AdminGuard } });
      origin = running.origin;
      for (const [client, n] of Object.entries(TRAFFIC)) {
        const statuses: number[] = [];
        for (let i = 0; i < n; i++) statuses.push((await get('/quotes', { 'x-client': client })).status);
        expect(statuses).toEqual(Array.from({ length: n }, (_, i) => (i < LIMIT ? 200 : 429)));
      }
    });
    afterAll(async () => {
      await running?.close();
    });

    it('reports the traffic in report.json, only to the admin, and a bad query is a 400 naming it', async () => {
      const wrong: Record<string, string>[] = [{}, { 'x-admin-key': 'wrong' }, { cookie: 'admin=wrong' }, { cookie: 'notadmin=secret' }];
      for (const headers of wrong) {
        const refused = await get(REPORT_JSON, headers);
        expect(refused.status).toBe(403);
        const text = await refused.text();
        for (const identity of IDENTITIES) expect(text).not.toContain(identity);
      }

      const answered = await get(REPORT_JSON, ADMIN_KEY);
      expect(answered.status).toBe(200);
      expect(answered.headers.get('content-type')).toMatch(/^application\/json/);
      expect(answered.headers.get('cache-control')).toBe('no-store');
      const body = (await answered.json()) as AdvisorReport;
      expect(body.scope).toBe(target.name === 'redis' ? 'shared' : 'instance');
      expect(body.generatedAt).toBe(new Date(Date.UTC(2030, 0, 1, 0, 0, 5)).toISOString());
      const quotes = policyOf(body);
      expect(quotes).toMatchObject({ limit: LIMIT, windowSeconds: 60, clients: IDENTITIES.length, requests: REQUESTS, denied: DENIED, shadowDenied: 0 });
      expect(quotes.candidates.find((c) => c.limit === LIMIT)).toMatchObject({ exact: true, clientsDenied: CLIENTS_DENIED, requestsDenied: DENIED / REQUESTS });
      expect(quotes.top.map(({ identity, requests }) => [identity, requests])).toEqual(HEAVIEST_FIRST);

      // the cookie admits too; the query is read
      const byCookie = await get(`${REPORT_JSON}?period=1h&target=0.01&candidates=7,12&top=2`, { cookie: 'theme=dark; admin=secret' });
      expect(byCookie.status).toBe(200);
      const queried = policyOf((await byCookie.json()) as AdvisorReport);
      expect(queried.top.map((t) => t.identity)).toEqual(HEAVIEST_FIRST.slice(0, 2).map(([identity]) => identity));
      expect(queried.candidates.map((c) => c.limit)).toEqual(expect.arrayContaining([7, 12, LIMIT]));
      expect(queried.suggestion?.target).toBe(0.01);

      for (const [query, named] of [
        ['?target=2', /target/],
        ['?target=abc', /target/],
        ['?period=soon', /period/],
        ['?candidates=50,0', /candidates/],
        ['?top=-1', /top/],
        ['?target=0.1&target=0.2', /target must be given once/],
      ] as const) {
        const bad = await get(`${REPORT_JSON}${query}`, ADMIN_KEY);
        expect([query, bad.status]).toEqual([query, 400]);
        const error = (await bad.json()) as { statusCode: number; message: string };
        expect(error.statusCode).toBe(400);
        expect(error.message).toMatch(named);
      }
      // a refused client is refused before its query is read
      expect((await get(`${REPORT_JSON}?target=2`)).status).toBe(403);
    });

    it('sends the page with a fresh CSP nonce, the one on its script and style, never cached', async () => {
      const nonces: string[] = [];
      for (let i = 0; i < 2; i++) {
        const response = await get(DASHBOARD, ADMIN_KEY);
        expect(response.status).toBe(200);
        expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
        expect(response.headers.get('cache-control')).toBe('no-store');
        expect(response.headers.get('x-content-type-options')).toBe('nosniff');
        const csp = response.headers.get('content-security-policy') ?? '';
        const nonce = /script-src 'nonce-([A-Za-z0-9+/_-]+={0,2})'/.exec(csp)?.[1];
        expect(nonce).toBeDefined();
        expect(csp).toBe(`default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self' data:`);
        const html = await response.text();
        expect(html.match(/<script\b[^>]*>/g)).toEqual([`<script nonce="${nonce}">`]);
        expect(html.match(/<style\b[^>]*>/g)).toEqual([`<style nonce="${nonce}">`]);
        // the page is a shell: the figures come from report.json, behind the same guard
        for (const identity of IDENTITIES) expect(html).not.toContain(identity);
        nonces.push(nonce!);
      }
      expect(nonces[0]).not.toBe(nonces[1]);

      const refused = await get(DASHBOARD);
      expect(refused.status).toBe(403);
      expect(refused.headers.get('content-security-policy')).toBeNull();
      expect(await refused.text()).not.toContain('<script');
    });

    it('is neither limited nor counted: 15 loads later, all answered, and the report is as the traffic left it', async () => {
      const before = await report();
      const statuses: number[] = [];
      for (let i = 0; i < 15; i++) {
        // with an x-client too: were the dashboard counted, it would be under a client's key
        const page = await get(DASHBOARD, { ...ADMIN_KEY, 'x-client': 'client-heavy-hal' });
        statuses.push(page.status);
        expect(page.headers.get('ratelimit-policy')).toBeNull();
        await page.text();
        const json = await get(REPORT_JSON, { ...ADMIN_KEY, 'x-client': 'client-heavy-hal' });
        statuses.push(json.status);
        expect(json.headers.get('ratelimit')).toBeNull();
        await json.text();
      }
      expect(statuses).toEqual(Array(30).fill(200));
      const after = await report();
      expect(after.policies.map((p) => p.name)).toEqual([POLICY]);
      expect(policyOf(after)).toEqual({ ...policyOf(before) });
      expect(JSON.stringify(after.policies.map((p) => p.name))).not.toMatch(/dashboard/i);
    });

    it('is exempt from defaultLimit too, which would otherwise limit every route', async () => {
      const clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 5));
      // a keyPrefix of its own: on Redis, the advisor's shared figures must not be the other app's
      const other = await startApp(platform, target.create(clock), {
        keyPrefix: 'rl-dashboard-default',
        defaultLimit: '5/minute',
        advisor: { clock: clock.now },
        dashboard: { path: 'admin/rate-limits', guard: AdminGuard },
      });
      try {
        const get5 = (path: string, headers: Record<string, string> = {}) => fetch(`${other.origin}${path}`, { headers });
        const statuses: number[] = [];
        for (let i = 0; i < 15; i++) {
          for (const path of [DASHBOARD, REPORT_JSON]) {
            const response = await get5(path, ADMIN_KEY);
            statuses.push(response.status);
            await response.text();
          }
        }
        expect(statuses).toEqual(Array(30).fill(200));
        const empty = (await (await get5(REPORT_JSON, ADMIN_KEY)).json()) as AdvisorReport;
        expect(empty.policies).toEqual([]);
        // the default limit is real: a route of the app is limited by it (5/minute by IP, before its own 10/minute)
        const quotes: number[] = [];
        for (let i = 0; i < 6; i++) quotes.push((await get5('/quotes', { 'x-client': 'client-light-ann' })).status);
        expect(quotes).toEqual([200, 200, 200, 200, 200, 429]);
        const names = ((await (await get5(REPORT_JSON, ADMIN_KEY)).json()) as AdvisorReport).policies.map((p) => p.name).sort();
        expect(names).toEqual(['default', POLICY].sort());
      } finally {
        await other.close();
      }
    });

    describeWithBrowser(`in Chromium (${platform}, ${target.name} storage)`, () => {

      const contexts: BrowserContext[] = [];

      beforeAll(async () => {
        browser ??= await launchBrowser();
      });
      afterEach(async () => {
        await Promise.all(contexts.splice(0).map((context) => context.close()));
      });

      interface Opened {
        page: Page;
        /** The document's response status. */
        status: number | undefined;
        /** Console errors and warnings, and uncaught exceptions. */
        problems: string[];
        /** `securitypolicyviolation` events, as `directive blocked-uri`. */
        violations(): Promise<string[]>;
        /** Every URL the page requested. */
        requested: string[];
      }

      /** Opens `path` in a fresh context (en-US, UTC), recording what could go wrong; waits for `data-ready` unless told not to. */
      async function open(
        path: string,
        options: { prepare?: (context: BrowserContext) => Promise<void>; headers?: Record<string, string>; ready?: boolean } = {},
      ): Promise<Opened> {
        const context = await browser!.newContext({
          locale: 'en-US',
          timezoneId: 'UTC',
          viewport: { width: 1280, height: 900 },
          ...(options.headers && { extraHTTPHeaders: options.headers }),
        });
        contexts.push(context);
        await options.prepare?.(context);
        const page = await context.newPage();
        const problems: string[] = [];
        const requested: string[] = [];
        page.on('console', (message) => {
          if (message.type() === 'error' || message.type() === 'warning') problems.push(`${message.type()}: ${message.text()}`);
        });
        page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
        await page.route('**/*', (route) => {
          const url = route.request().url();
          requested.push(url);
          return url.startsWith(`${origin}/`) ? route.continue() : route.abort();
        });
        // injected by the browser, not by the page, so CSP does not apply to it
        await page.addInitScript({
          content: `window.__violations = []; document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));`,
        });
        const response = await page.goto(`${origin}${path}`);
        if (options.ready !== false) await page.waitForSelector('body[data-ready="true"]', { timeout: 10_000 });
        return { page, status: response?.status(), problems, requested, violations: async () => (await page.evaluate('window.__violations')) as string[] };
      }

      /** No console error, no CSP violation, nothing requested but the app. */
      async function expectClean(opened: Opened): Promise<void> {
        expect(opened.problems).toEqual([]);
        expect(await opened.violations()).toEqual([]);
        expect(opened.requested.length).toBeGreaterThan(0);
        expect(opened.requested.filter((url) => !url.startsWith(`${origin}/`))).toEqual([]);
      }

      const adminCookie = (context: BrowserContext) => context.addCookies([{ name: 'admin', value: 'secret', url: origin }]);
      const section = (page: Page) => page.locator(`section.policy[data-policy="${POLICY}"]`);

      it('shows the traffic to the admin (cookie): the policy, its distribution, the candidates, the heaviest clients', async () => {
        const expected = policyOf(await report());
        const opened = await open(DASHBOARD, { prepare: adminCookie });
        const { page } = opened;
        expect(opened.status).toBe(200);
        expect(await page.getAttribute('body', 'data-state')).toBe('report');
        await expectClean(opened);
        expect(opened.requested).toEqual([`${origin}${DASHBOARD}`, `${origin}${REPORT_JSON}`]);
        expect(await page.locator('section.policy').count()).toBe(1);
        const quotes = section(page);
        expect(await quotes.count()).toBe(1);
        expect(await page.locator('#meta').innerText()).toContain('last 1 h');

        // the totals of the traffic
        const head = quotes.locator('.policy-head');
        expect(await head.innerText()).toContain('10/minute');
        expect(await head.locator('dd[data-field="clients"] .num').innerText()).toBe(count(IDENTITIES.length));
        expect(await head.locator('dd[data-field="requests"] .num').innerText()).toBe(count(REQUESTS));
        expect(await head.locator('dd[data-field="denied"] .num').innerText()).toBe(count(DENIED));

        // the distribution: a bar per threshold reached, past the limit in red, and the limit line
        const chart = quotes.locator('svg.distribution');
        const bars = await chart.locator('rect.bar').evaluateAll((nodes: { getAttribute(name: string): string | null }[]) =>
          nodes.map((node) => ({ threshold: Number(node.getAttribute('data-threshold')), over: (node.getAttribute('class') ?? '').split(' ').includes('over') })),
        );
        expect(bars.length).toBeGreaterThan(1);
        expect(bars.map((bar) => bar.threshold)).toEqual(expected.distribution.filter((p) => p.threshold > 0 && p.clients > 0).map((p) => p.threshold));
        expect(bars.filter((bar) => bar.over).map((bar) => bar.threshold)).toEqual(bars.filter((bar) => bar.threshold > LIMIT).map((bar) => bar.threshold));
        expect(bars.some((bar) => bar.over)).toBe(true); // the heavy client went past it
        expect(await chart.locator('line.limit-line').count()).toBe(1);
        expect(await chart.locator('text.limit-label').textContent()).toBe(`limit ${count(LIMIT)}`);

        // the current limit's row: one client in four refused, 4 requests of 27
        const rows = quotes.locator('table.candidates tbody tr');
        expect(await rows.count()).toBe(expected.candidates.length);
        const current = quotes.locator(`table.candidates tbody tr[data-limit="${LIMIT}"]`);
        expect(await current.locator('td.clients .value').innerText()).toBe(percent(CLIENTS_DENIED));
        expect(await current.locator('td.clients .value').innerText()).toBe('25%');
        expect(await current.locator('td.requests .value').innerText()).toBe(percent(DENIED / REQUESTS));
        expect(await current.locator('td.estimate').innerText()).toBe('exact');

        // the suggestion, as the report has it
        expect(expected.suggested).not.toBeNull();
        expect(await quotes.locator('.suggestion strong').innerText()).toBe(`Suggested: ${count(expected.suggested!)}/minute`);

        // the heaviest identities, heaviest first, as text
        const top = quotes.locator('table.top tbody tr');
        expect(await top.locator('td.identity').allInnerTexts()).toEqual(HEAVIEST_FIRST.map(([identity]) => identity));
        expect(await top.locator('td.requests').allInnerTexts()).toEqual(HEAVIEST_FIRST.map(([, n]) => count(n)));

        if (platform === 'express' && target.name === 'memory') await page.screenshot({ path: SCREENSHOT, fullPage: true });
      });

      // a real report sorts its candidates by limit: the current one is not the first row
      it('marks the current limit’s row as current, and no other', async () => {
        const { page } = await open(DASHBOARD, { prepare: adminCookie });
        const rows = section(page).locator('table.candidates tbody tr');
        const marked = await rows.evaluateAll((nodes: { getAttribute(name: string): string | null }[]) =>
          nodes.filter((node) => (node.getAttribute('class') ?? '').split(' ').includes('current')).map((node) => Number(node.getAttribute('data-limit'))),
        );
        expect(marked).toEqual([LIMIT]);
        expect(await section(page).locator(`tr[data-limit="${LIMIT}"] td.limit`).innerText()).toMatch(/^10\s*current/);
      });

      // an author `display` beats the UA's `[hidden]`: the page must hide the nav itself
      it('links the policies only when there are several: one policy, no nav', async () => {
        const { page } = await open(DASHBOARD, { prepare: adminCookie });
        expect(await page.locator('#nav').getAttribute('hidden')).not.toBeNull();
        expect(await page.locator('#nav').isVisible()).toBe(false);
      });

      it('shows it with the admin header (extraHTTPHeaders) too', async () => {
        const opened = await open(DASHBOARD, { headers: ADMIN_KEY });
        expect(opened.status).toBe(200);
        expect(await opened.page.getAttribute('body', 'data-state')).toBe('report');
        await expectClean(opened);
        expect(await section(opened.page).count()).toBe(1);
        expect(await section(opened.page).locator('table.top td.identity').first().innerText()).toBe(HEAVIEST_FIRST[0][0]);
      });

      it('refuses the page without credentials, or with wrong ones, and shows no report data', async () => {
        const attempts: { prepare?: (context: BrowserContext) => Promise<void>; headers?: Record<string, string> }[] = [
          {},
          { prepare: (context) => context.addCookies([{ name: 'admin', value: 'wrong', url: origin }]) },
          { headers: { 'x-admin-key': 'Secret' } },
        ];
        for (const attempt of attempts) {
          const opened = await open(DASHBOARD, { ...attempt, ready: false });
          expect(opened.status).toBe(403);
          // Nest's refusal, not the page: nothing ran, nothing was fetched
          expect(opened.requested).toEqual([`${origin}${DASHBOARD}`]);
          expect(await opened.page.locator('section.policy, #report, script').count()).toBe(0);
          const text = await opened.page.locator('body').innerText();
          expect(text).toContain('Forbidden');
          for (const identity of IDENTITIES) expect(text).not.toContain(identity);
          expect(await opened.page.content()).not.toContain(POLICY);
        }
      });

      it('shows the 400 of a bad query as an error, naming the target', async () => {
        const opened = await open(`${DASHBOARD}?target=2`, { prepare: adminCookie });
        expect(opened.status).toBe(200);
        expect(await opened.page.getAttribute('body', 'data-state')).toBe('error');
        expect(await opened.page.locator('#error').innerText()).toMatch(/^Could not load the report: HTTP 400 Bad Request: target "2" must be a share/);
        expect(await opened.page.locator('section.policy').count()).toBe(0);
        // the refused fetch is the one console error Chromium logs of itself
        expect(opened.problems).toEqual([expect.stringMatching(/status of 400/)]);
        expect(await opened.violations()).toEqual([]);
        expect(opened.requested).toEqual([`${origin}${DASHBOARD}?target=2`, `${origin}${REPORT_JSON}?target=2`]);
      });
    });
  });

  it('has no dashboard route when the module has no `dashboard`', async () => {
    const clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 5));
    const running = await startApp(platform, memoryTarget.create(clock), { advisor: { clock: clock.now } });
    try {
      for (const path of [DASHBOARD, REPORT_JSON]) {
        const response = await fetch(`${running.origin}${path}`, { headers: ADMIN_KEY });
        expect([path, response.status]).toEqual([path, 404]);
        await response.text();
      }
      // the app itself answers
      expect((await fetch(`${running.origin}/quotes`, { headers: { 'x-client': 'a' } })).status).toBe(200);
    } finally {
      await running.close();
    }
  });
});
