import type { Response } from 'supertest';

/** `r` of the `RateLimit` header: quota left after this request. */
export function remaining(response: Response): number {
  const match = /;r=(\d+);/.exec(String(response.headers['ratelimit']));
  if (!match) throw new Error(`no r= in RateLimit header "${response.headers['ratelimit']}"`);
  return Number(match[1]);
}

/** A 429 with a whole-seconds Retry-After and exactly the documented body. */
export function expectTooManyRequests(response: Response): void {
  expect(response.status).toBe(429);
  expect(response.headers['retry-after']).toMatch(/^[1-9]\d*$/);
  const retryAfter = Number(response.headers['retry-after']);
  expect(response.body).toEqual({ statusCode: 429, error: 'Too Many Requests', message: 'Rate limit exceeded', retryAfter });
}

export const FREE_USER = { Authorization: 'Bearer free-token' };
export const PAID_USER = { Authorization: 'Bearer paid-token' };

/** Script runs (EVALSHA and EVAL) counted in an `INFO commandstats` reply. */
export function scriptCalls(commandstats: string): number {
  const calls = (command: string) => Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(commandstats)?.[1] ?? 0);
  return calls('evalsha') + calls('eval');
}
