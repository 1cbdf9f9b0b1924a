import { Redis } from 'ioredis';
import type { AdvisorReport } from './advisor-report.js';
import { AdvisorStore } from './advisor-store.js';
import { checkQuery, DEFAULT_PERIOD_MS, policyReport, type AdvisorQuery } from './policy-report.js';

/** Where the report is read: the module's `keyPrefix` (default `rl`), and the query. */
export interface SharedReportOptions extends AdvisorQuery {
  readonly keyPrefix?: string;
}

/**
 * The report every instance sharing a Redis has written (what `RateLimitService.advisorReport()`
 * answers on any of them), read without an app: for the CLI. Identities are as the instances
 * stored them: keyed hashes under `redactIdentities`.
 */
export async function readSharedReport(url: string, options: SharedReportOptions = {}, now = Date.now()): Promise<AdvisorReport> {
  checkQuery(options);
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: () => null });
  // the first error says why (ECONNREFUSED host:port); the failed command would only say it closed
  let cause: Error | undefined;
  client.on('error', (error: Error) => (cause ??= error));
  try {
    await client.connect().catch((error: Error) => {
      throw cause ?? error;
    });
    const store = new AdvisorStore(client, options.keyPrefix ?? 'rl');
    const periodMs = options.periodMs ?? DEFAULT_PERIOD_MS;
    const policies = [];
    for (const meta of await store.policies()) policies.push(policyReport({ meta, ...(await store.figures(meta, now, periodMs)) }, options));
    return { generatedAt: new Date(now).toISOString(), periodSeconds: periodMs / 1000, scope: 'shared', policies };
  } finally {
    client.disconnect();
  }
}
