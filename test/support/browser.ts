/**
 * A headless Chromium for the specs that test pages in a real browser (playwright-core drives the
 * system's Chromium: no browser download). Whether one is installed is decided when the spec is
 * loaded, before any `describe` is declared. When it is not:
 * - with REQUIRE_BROWSER=1 (CI), the suite fails with a test saying how to install it;
 * - otherwise, the suite is skipped, with one console warning saying what it needs.
 */
import { accessSync, constants } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

const DEFAULT_PATHS = ['/usr/bin/chromium', '/usr/bin/chromium-browser'];
const HOW_TO_INSTALL = 'install it (apt-get install -y chromium) or set CHROMIUM_PATH to its executable';

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** CHROMIUM_PATH when set (and only it: a wrong path is not quietly replaced by another), else the system's Chromium; undefined when none runs. */
export function chromiumPath(): string | undefined {
  const configured = process.env.CHROMIUM_PATH;
  if (configured) return executable(configured) ? configured : undefined;
  return DEFAULT_PATHS.find(executable);
}

/** REQUIRE_BROWSER=1: a missing Chromium fails the suite instead of skipping it. */
export const browserRequired = process.env.REQUIRE_BROWSER === '1';

/** A headless Chromium; `--no-sandbox` as the tests run as root in CI containers. */
export async function launchBrowser(): Promise<Browser> {
  const executablePath = chromiumPath();
  if (!executablePath) throw new Error(`launchBrowser: ${missing()}`);
  return chromium.launch({ executablePath, headless: true, args: ['--no-sandbox'] });
}

function missing(): string {
  const configured = process.env.CHROMIUM_PATH;
  return configured
    ? `CHROMIUM_PATH=${configured} is not an executable; ${HOW_TO_INSTALL}`
    : `no Chromium at ${DEFAULT_PATHS.join(' or ')}; ${HOW_TO_INSTALL}`;
}

/**
 * `describe(title, body)` when Chromium is installed. When it is not: with REQUIRE_BROWSER=1, a
 * suite whose one test fails saying so; otherwise `describe.skip`, and a console warning.
 */
export function describeWithBrowser(title: string, body: () => void): void {
  if (chromiumPath()) {
    describe(title, body);
  } else if (browserRequired) {
    describe(title, () => {
      it('needs Chromium', () => {
        throw new Error(`${title}: ${missing()}. REQUIRE_BROWSER=1 is set, so this fails rather than skips.`);
      });
    });
  } else {
    console.warn(`${title}: ${missing()}. These tests were skipped (set REQUIRE_BROWSER=1 to fail instead).`);
    describe.skip(title, body);
  }
}
