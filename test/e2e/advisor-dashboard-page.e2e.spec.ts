/**
 * The limit advisor's dashboard page (lib/advisor/dashboard-page.ts) in a real headless Chromium,
 * served as the controller serves it: the page under its CSP with a fresh nonce, `report.json`
 * beside it (test/fixtures/advisor-report.json). Every page must render with no console error
 * and no CSP violation, reach nothing but 127.0.0.1 (it must work offline), and show the
 * identities, which clients choose, as text.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import type { AdvisorPolicyReport, AdvisorReport } from '../../lib/advisor/advisor-report.js';
import { dashboardContentSecurityPolicy, dashboardPage } from '../../lib/advisor/dashboard-page.js';
import { describeWithBrowser, launchBrowser } from '../support/browser.js';

const REPORT: AdvisorReport = JSON.parse(readFileSync(new URL('../fixtures/advisor-report.json', import.meta.url), 'utf8'));
const EMPTY: AdvisorReport = { generatedAt: REPORT.generatedAt, periodSeconds: 3600, scope: 'instance', policies: [] };
const SCREENSHOT = '/tmp/advisor-dashboard.png';

/** The header the controller sends, written out here rather than taken from the library: the page must work under exactly this. */
const csp = (nonce: string) => `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self' data:`;

/** The page's figures, as an en-US browser shows them. */
const count = (n: number) => new Intl.NumberFormat('en-US').format(n);
const percent = (x: number) => new Intl.NumberFormat('en-US', { style: 'percent', maximumSignificantDigits: 2 }).format(x);

const policy = (name: string): AdvisorPolicyReport => {
  const found = REPORT.policies.find((p) => p.name === name);
  if (!found) throw new Error(`the fixture has no policy ${name}`);
  return found;
};

describe('dashboardPage()', () => {
  const nonce = randomBytes(16).toString('base64');
  const html = dashboardPage({ nonce });

  it('is one document whose only script and style carry the nonce, and which loads nothing', () => {
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html.match(/<script\b[^>]*>/g)).toEqual([`<script nonce="${nonce}">`]);
    expect(html.match(/<style\b[^>]*>/g)).toEqual([`<style nonce="${nonce}">`]);
    // nothing external, and nothing CSP would block: inline handlers, style attributes, HTML from strings
    expect(html).not.toMatch(/\b(src|href)\s*=\s*["']?(https?:)?\/\//i);
    expect(html).not.toMatch(/<link\b(?![^>]*href="data:)/);
    expect(html).not.toMatch(/\son[a-z]+\s*=/i);
    expect(html).not.toMatch(/\sstyle\s*=/i);
    expect(html).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  });

  it('escapes the title, and refuses a nonce that could break out of its attribute or of the header', () => {
    const titled = dashboardPage({ nonce, title: '</title><script>alert(1)</script> & co' });
    expect(titled).toContain('<title>&#60;/title&#62;&#60;script&#62;alert(1)&#60;/script&#62; &#38; co</title>');
    expect(titled.match(/<script\b/g)).toHaveLength(1);
    for (const bad of ['', 'abc" onload="x', "abc'; script-src *", 'a b']) {
      expect(() => dashboardPage({ nonce: bad })).toThrow(/nonce/);
      expect(() => dashboardContentSecurityPolicy(bad)).toThrow(/nonce/);
    }
  });

  it('gives the controller the CSP the page is tested under', () => {
    expect(dashboardContentSecurityPolicy(nonce)).toBe(csp(nonce));
  });
});

describeWithBrowser('the advisor dashboard page in Chromium', () => {
  let browser: Browser;
  let server: Server;
  let origin: string;
  /** Every request the server answered: its URL and headers. */
  const served: { url: string; headers: IncomingHttpHeaders }[] = [];
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    server = createServer((request, response) => {
      const url = request.url ?? '/';
      served.push({ url, headers: request.headers });
      const path = new URL(url, 'http://127.0.0.1').pathname;
      const json = (status: number, body: unknown) => {
        response.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        response.end(JSON.stringify(body));
      };
      if (/^\/(admin\/rate-limits|forbidden|empty|broken)\/?$/.test(path)) {
        const nonce = randomBytes(16).toString('base64');
        response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': csp(nonce), 'cache-control': 'no-store' });
        response.end(dashboardPage({ title: 'Rate limits', nonce }));
      } else if (path === '/admin/rate-limits/report.json') {
        json(200, REPORT);
      } else if (path === '/forbidden/report.json') {
        json(403, { statusCode: 403, message: 'Forbidden resource' });
      } else if (path === '/empty/report.json') {
        json(200, EMPTY);
      } else if (path === '/broken/report.json') {
        response.writeHead(200, { 'content-type': 'text/html' });
        response.end('<html>a proxy page</html>');
      } else {
        response.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await new Promise((resolve) => server?.close(resolve));
  });

  afterEach(async () => {
    await Promise.all(contexts.splice(0).map((context) => context.close()));
  });

  interface Opened {
    page: Page;
    /** Console errors and warnings, and uncaught exceptions. */
    problems: string[];
    /** `securitypolicyviolation` events, as `directive blocked-uri`. */
    violations(): Promise<string[]>;
    /** Every URL the page requested. */
    requested: string[];
    dialogs: string[];
  }

  /**
   * Opens `path` in a fresh context (en-US, UTC), recording what could go wrong, and waits for
   * `data-ready`. The context is closed after the test, unless `shared` (closed by whoever shares it).
   */
  async function open(path: string, options: { prepare?: (context: BrowserContext) => Promise<void>; shared?: boolean } = {}): Promise<Opened> {
    const context = await browser.newContext({ locale: 'en-US', timezoneId: 'UTC', viewport: { width: 1280, height: 900 } });
    if (!options.shared) contexts.push(context);
    const { prepare } = options;
    await prepare?.(context);
    const page = await context.newPage();
    const opened: Opened = { page, problems: [], requested: [], dialogs: [], violations: async () => (await page.evaluate('window.__violations')) as string[] };
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') opened.problems.push(`${message.type()}: ${message.text()}`);
    });
    page.on('pageerror', (error) => opened.problems.push(`pageerror: ${error.message}`));
    page.on('dialog', (dialog) => {
      opened.dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    await page.route('**/*', (route) => {
      const url = route.request().url();
      opened.requested.push(url);
      return url.startsWith(`${origin}/`) ? route.continue() : route.abort();
    });
    // injected by the browser, not by the page, so CSP does not apply to it
    await page.addInitScript({
      content: `window.__violations = []; document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));`,
    });
    await page.goto(`${origin}${path}`);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 10_000 });
    return opened;
  }

  /** Nothing went wrong: no console error, no CSP violation, no dialog, nothing requested but this server. */
  async function expectClean(opened: Opened): Promise<void> {
    expect(opened.problems).toEqual([]);
    expect(await opened.violations()).toEqual([]);
    expect(opened.dialogs).toEqual([]);
    expect(opened.requested.length).toBeGreaterThan(0);
    expect(opened.requested.filter((url) => !url.startsWith(`${origin}/`))).toEqual([]);
  }

  const section = (page: Page, name: string): Locator => page.locator(`section.policy[data-policy="${name}"]`);

  interface Rect { threshold: number; className: string; x: number; width: number; y: number; height: number }
  /** The bars of a policy's distribution chart, in the order drawn (by threshold). */
  function bars(page: Page, name: string): Promise<Rect[]> {
    return section(page, name)
      .locator('svg.distribution rect.bar')
      .evaluateAll((nodes: { getAttribute(name: string): string | null }[]) =>
        nodes.map((node) => ({
          threshold: Number(node.getAttribute('data-threshold')),
          className: node.getAttribute('class') ?? '',
          x: Number(node.getAttribute('x')),
          width: Number(node.getAttribute('width')),
          y: Number(node.getAttribute('y')),
          height: Number(node.getAttribute('height')),
        })),
      );
  }
  const lineX = async (chart: Locator, className: string) => Number(await chart.locator(`line.${className}`).getAttribute('x1'));

  describe('with the fixture report', () => {
    let opened: Opened;
    beforeAll(async () => {
      // a fresh context per test would cost a page load each: these tests only read the page
      opened = await open('/admin/rate-limits', { shared: true });
    });
    afterAll(async () => {
      await opened?.page.context().close();
    });

    it('renders every policy, with no console error, no CSP violation, and nothing fetched but the report', async () => {
      await expectClean(opened);
      expect(await opened.page.locator('section.policy').count()).toBe(REPORT.policies.length);
      for (const p of REPORT.policies) expect(await section(opened.page, p.name).count()).toBe(1);
      expect(opened.requested).toContain(`${origin}/admin/rate-limits/report.json`);
      // the stylesheet applied (CSP let it): the suggested line is dashed
      const dash = await opened.page
        .locator('line.suggested-line')
        .first()
        .evaluate((node) => (globalThis as unknown as { getComputedStyle(n: unknown): { strokeDasharray: string } }).getComputedStyle(node).strokeDasharray);
      expect(dash).not.toBe('none');
      await opened.page.screenshot({ path: SCREENSHOT, fullPage: true });
    });

    it.each(REPORT.policies.map((p) => [p.name]))('heads %s with its rate, algorithm, mode, estimate and totals', async (name) => {
      const p = policy(name);
      const head = section(opened.page, name).locator('.policy-head');
      const text = await head.innerText();
      for (const part of [p.name, p.rate, p.algorithm, p.mode, `estimate: ${p.estimate}`]) expect(text).toContain(part);
      for (const field of ['clients', 'requests', 'denied', 'shadowDenied'] as const) {
        expect(await head.locator(`dd[data-field="${field}"] .num`).innerText()).toBe(count(p[field]));
      }
    });

    it.each(REPORT.policies.map((p) => [p.name]))('draws the distribution of %s on log scales, the limit line between the right bars', async (name) => {
      const p = policy(name);
      const drawn = await bars(opened.page, name);
      expect(drawn.map((bar) => bar.threshold)).toEqual(p.distribution.filter((point) => point.clients > 0).map((point) => point.threshold));
      for (let k = 1; k < drawn.length; k++) {
        // contiguous left to right, and no taller than the one before (the share that reached a count only falls)
        expect(drawn[k].x).toBeCloseTo(drawn[k - 1].x + drawn[k - 1].width, 0);
        expect(drawn[k].height).toBeLessThanOrEqual(drawn[k - 1].height);
      }
      // log x: from 1 to 2 is as wide as from 8 to 16
      const at = (t: number) => drawn.find((bar) => bar.threshold === t)!;
      expect(at(2).x - at(1).x).toBeCloseTo(at(16).x - at(8).x, 0);
      // past the limit in red, the rest not
      expect(drawn.filter((bar) => bar.className.split(' ').includes('over')).map((bar) => bar.threshold)).toEqual(
        drawn.filter((bar) => bar.threshold > p.limit).map((bar) => bar.threshold),
      );
      // log y: the clients refused (a fraction of a percent) still make a bar one can see
      const refused = at(p.limit + 1);
      expect(p.distribution.find((point) => point.threshold === p.limit + 1)!.clients / p.clients).toBeLessThan(0.01);
      expect(refused.height).toBeGreaterThan(10);

      const chart = section(opened.page, name).locator('svg.distribution');
      const limit = await lineX(chart, 'limit-line');
      const below = drawn.filter((bar) => bar.threshold < p.limit).at(-1)!;
      expect(limit).toBeGreaterThan(below.x + below.width / 2);
      expect(limit).toBeCloseTo(at(p.limit).x, 0);
      expect(limit).toBeLessThan(refused.x);
      expect(await chart.locator('text.limit-label').textContent()).toBe(`limit ${count(p.limit)}`);

      expect(p.suggested).not.toBeNull();
      const suggested = await lineX(chart, 'suggested-line');
      const from = drawn.filter((bar) => bar.threshold <= p.suggested!).at(-1)!;
      const to = drawn.find((bar) => bar.threshold > p.suggested!)!;
      expect(suggested).toBeGreaterThanOrEqual(from.x - 0.1);
      expect(suggested).toBeLessThan(to.x);
      expect(await chart.locator('text.suggested-label').textContent()).toBe(`suggested ${count(p.suggested!)}`);
    });

    it.each(REPORT.policies.map((p) => [p.name]))('draws the timeline of %s: a bar per bucket, the peaks where the fixture has them', async (name) => {
      const p = policy(name);
      const timeline = section(opened.page, name).locator('svg.timeline');
      const heights = (kind: string) =>
        timeline.locator(`rect.${kind}`).evaluateAll((nodes: { getAttribute(name: string): string | null }[]) => nodes.map((node) => Number(node.getAttribute('height'))));
      const peak = (values: number[]) => values.indexOf(Math.max(...values));
      const requests = await heights('requests');
      const denied = await heights('denied');
      const shadow = await heights('shadow-denied');
      for (const drawn of [requests, denied, shadow]) expect(drawn).toHaveLength(p.timeline.length);
      expect(peak(requests)).toBe(peak(p.timeline.map((b) => b.requests)));
      if (p.denied > 0) expect(peak(denied)).toBe(peak(p.timeline.map((b) => b.denied)));
      else expect(denied.every((h) => h === 0)).toBe(true);
      if (p.shadowDenied > 0) expect(peak(shadow)).toBe(peak(p.timeline.map((b) => b.shadowDenied)));
      else expect(shadow.every((h) => h === 0)).toBe(true);
    });

    it.each(REPORT.policies.map((p) => [p.name]))('lists the candidates of %s with their shares, exact or ≈', async (name) => {
      const p = policy(name);
      const rows = section(opened.page, name).locator('table.candidates tbody tr');
      expect(await rows.count()).toBe(p.candidates.length);
      for (const [i, c] of p.candidates.entries()) {
        const row = rows.nth(i);
        expect(await row.locator('td.limit .num').innerText()).toBe(count(c.limit));
        expect(await row.locator('td.clients .value').innerText()).toBe(percent(c.clientsDenied));
        expect(await row.locator('td.requests .value').innerText()).toBe(percent(c.requestsDenied));
        expect(await row.locator('td.estimate').innerText()).toBe(c.exact ? 'exact' : '≈');
        // a range under the share when it is not known exactly
        const ranges = [c.clientsDeniedRange, c.requestsDeniedRange].filter((range) => !c.exact && range.low !== range.high);
        expect(await row.locator('.range').allInnerTexts()).toEqual(ranges.map((range) => `${percent(range.low)} – ${percent(range.high)}`));
      }
      // candidates come sorted by limit: the current one is marked wherever it falls, and only it
      const marked = await rows.evaluateAll((nodes: { getAttribute(name: string): string | null }[]) =>
        nodes.filter((node) => (node.getAttribute('class') ?? '').split(' ').includes('current')).map((node) => Number(node.getAttribute('data-limit'))),
      );
      expect(marked).toEqual([p.limit]);
    });

    it('shows the fixture’s figures as a person reads them', async () => {
      const quotes = section(opened.page, 'QuotesController.getQuote');
      const current = quotes.locator('table.candidates tbody tr[data-limit="100"]');
      expect(await current.locator('td').allInnerTexts()).toEqual(['100current', '0.27%', '0.86%', 'exact']);
      const between = quotes.locator('table.candidates tbody tr[data-limit="120"]');
      expect(await between.locator('td.clients').innerText()).toMatch(/^0\.092%\s+0\.079% – 0\.11%$/);
      expect(await quotes.locator('.suggestion').innerText()).toContain(
        'Suggested: 127/minute — refuses at most 0.1% of clients (based on 33,113 client-windows)',
      );
      const search = section(opened.page, 'SearchController.search');
      expect(await search.locator('.suggestion').innerText()).toContain('Suggested: 22/second — refuses at most 0.1% of clients (based on 47,612 client-windows)');
      expect(await search.locator('tr[data-limit="22"]').count()).toBe(0); // 22 is no candidate: no row to mark
    });

    it.each(REPORT.policies.map((p) => [p.name]))('lists the top identities of %s as text', async (name) => {
      const p = policy(name);
      const rows = section(opened.page, name).locator('table.top tbody tr');
      expect(await rows.count()).toBe(p.top.length);
      for (const [i, entry] of p.top.entries()) {
        expect(await rows.nth(i).locator('td.identity').innerText()).toBe(entry.identity);
        expect(await rows.nth(i).locator('td.requests').innerText()).toBe(count(entry.requests));
        expect(await rows.nth(i).locator('td.error').innerText()).toBe(entry.error > 0 ? `± ${count(entry.error)}` : 'exact');
      }
    });

    it('shows hostile identities as text: no script ran, no element was made from them', async () => {
      const { page } = opened;
      expect(REPORT.policies.some((p) => p.top.some((t) => t.identity === '<script>alert(1)</script>'))).toBe(true);
      const cell = page.locator('table.top td.identity', { hasText: '<script>alert(1)</script>' });
      expect(await cell.count()).toBe(1);
      expect(await cell.isVisible()).toBe(true);
      expect(await page.locator('td.identity', { hasText: 'onerror="window.__xss=1"' }).isVisible()).toBe(true);
      expect(await page.locator('main script, main img, main [onerror]').count()).toBe(0);
      expect(await page.evaluate('typeof window.__xss')).toBe('undefined');
      expect(opened.dialogs).toEqual([]);
    });
  });

  it('forwards the query string and the cookies to report.json, from a path with a trailing slash', async () => {
    const opened = await open('/admin/rate-limits/?target=0.001&candidates=50,100', {
      prepare: (context) => context.addCookies([{ name: 'session', value: 'abc', url: origin }]),
    });
    await expectClean(opened);
    const report = served.filter((entry) => entry.url.startsWith('/admin/rate-limits/report.json')).at(-1)!;
    expect(report.url).toBe('/admin/rate-limits/report.json?target=0.001&candidates=50,100');
    expect(report.headers.cookie).toBe('session=abc');
    expect(await opened.page.inputValue('input[name="target"]')).toBe('0.001');
    expect(await opened.page.inputValue('input[name="candidates"]')).toBe('50,100');
  });

  it('applies the target and the candidates from its form, keeping the other parameters', async () => {
    const opened = await open('/admin/rate-limits?token=t0k3n&target=0.001');
    await opened.page.fill('input[name="target"]', '0.01');
    await opened.page.fill('input[name="candidates"]', '80,90');
    await Promise.all([opened.page.waitForURL(/candidates=/), opened.page.click('button[type="submit"]')]);
    await opened.page.waitForSelector('body[data-ready="true"]');
    await expectClean(opened);
    expect(served.at(-1)!.url).toBe('/admin/rate-limits/report.json?token=t0k3n&target=0.01&candidates=80%2C90');
  });

  it('shows the HTTP status when report.json is refused', async () => {
    const opened = await open('/forbidden');
    const error = opened.page.locator('#error');
    expect(await error.isVisible()).toBe(true);
    expect(await error.innerText()).toBe('Could not load the report: HTTP 403 Forbidden: Forbidden resource');
    expect(await opened.page.locator('section.policy, #empty').count()).toBe(0);
    // the refused fetch is the one console error Chromium logs of itself
    expect(opened.problems).toEqual([expect.stringMatching(/status of 403/)]);
    expect(await opened.violations()).toEqual([]);
  });

  it('says so when report.json is not a report', async () => {
    const opened = await open('/broken');
    expect(await opened.page.locator('#error').innerText()).toMatch(/^Could not show the report: /);
    await expectClean(opened);
  });

  it('says no traffic was observed when the report has no policies', async () => {
    const opened = await open('/empty');
    await expectClean(opened);
    const empty = opened.page.locator('#empty');
    expect(await empty.isVisible()).toBe(true);
    expect(await empty.innerText()).toContain('No traffic observed yet');
    expect(await opened.page.locator('section.policy, #error').count()).toBe(0);
  });
});
