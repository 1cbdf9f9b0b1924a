import { randomBytes } from 'node:crypto';
import type { RateLimitModuleOptions } from '../rate-limit.options.js';

/** The limit advisor's settings, validated at start-up. */
export interface AdvisorConfig {
  /** The key of the identities' keyed hashes; undefined: identities are shown as they are. */
  readonly redactKey?: Buffer;
  readonly trackedIdentities: number;
  readonly flushIntervalMs: number;
  readonly clock: () => number;
  /** The dashboard's path without slashes around it, and its guard; undefined: no dashboard. */
  readonly dashboard?: { readonly path: string; readonly guard: Function };
}

const DEFAULT_TRACKED = 128;
const MAX_TRACKED = 10_000;
const DEFAULT_FLUSH_MS = 5_000;
/** A path of plain segments: it becomes a route. */
const DASHBOARD_PATH = /^[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/;

export function resolveAdvisorConfig(options: RateLimitModuleOptions): AdvisorConfig | undefined {
  const { advisor, dashboard } = options;
  if (dashboard !== undefined && (advisor === undefined || advisor === false)) {
    throw new Error('RateLimitModule: the dashboard shows the limit advisor; turn it on with `advisor: true` (or remove `dashboard`).');
  }
  if (advisor === undefined || advisor === false) return undefined;
  if (advisor !== true && (typeof advisor !== 'object' || advisor === null)) {
    throw new Error(`RateLimitModule: advisor must be true, false or an options object, got ${String(advisor)}`);
  }
  const settings = advisor === true ? {} : advisor;
  const trackedIdentities = settings.trackedIdentities ?? DEFAULT_TRACKED;
  if (!Number.isSafeInteger(trackedIdentities) || trackedIdentities < 1 || trackedIdentities > MAX_TRACKED) {
    throw new Error(`RateLimitModule: advisor.trackedIdentities must be an integer from 1 to ${MAX_TRACKED}, got ${String(settings.trackedIdentities)}`);
  }
  const flushIntervalMs = settings.flushInterval ?? DEFAULT_FLUSH_MS;
  if (!(flushIntervalMs >= 100 && flushIntervalMs <= 3_600_000)) {
    throw new Error(`RateLimitModule: advisor.flushInterval must be a number of ms from 100 to 3600000, got ${String(settings.flushInterval)}`);
  }
  const redact = settings.redactIdentities;
  let redactKey: Buffer | undefined;
  if (redact === true) redactKey = randomBytes(32);
  else if (typeof redact === 'object' && redact !== null) {
    if (typeof redact.secret !== 'string' || redact.secret.length < 16) {
      throw new Error('RateLimitModule: advisor.redactIdentities.secret must be a string of at least 16 characters.');
    }
    redactKey = Buffer.from(redact.secret, 'utf8');
  } else if (redact !== undefined && redact !== false) {
    throw new Error(`RateLimitModule: advisor.redactIdentities must be true, false or { secret }, got ${String(redact)}`);
  }
  if (settings.clock !== undefined && typeof settings.clock !== 'function') throw new Error('RateLimitModule: advisor.clock must be a function returning ms since the epoch');
  return { redactKey, trackedIdentities, flushIntervalMs, clock: settings.clock ?? Date.now, dashboard: dashboard && resolveDashboard(dashboard) };
}

export function resolveDashboard(dashboard: NonNullable<RateLimitModuleOptions['dashboard']>): AdvisorConfig['dashboard'] {
  const path = String(dashboard.path ?? '').replace(/^\/+|\/+$/g, '');
  if (!DASHBOARD_PATH.test(path)) {
    throw new Error(`RateLimitModule: dashboard.path must be a path such as 'admin/rate-limits', got ${String(dashboard.path)}`);
  }
  if (typeof dashboard.guard !== 'function') {
    throw new Error(
      'RateLimitModule: dashboard.guard is required: the page shows who calls your API. Pass a guard class, e.g. `guard: AdminGuard`.',
    );
  }
  return { path, guard: dashboard.guard };
}
