import type { RateLimitRule } from '../rules/rate-limit-rule.js';
import type { RateLimitDecision, RateLimitResult } from '../storage/rate-limit-decision.js';

/** `ietf`: RateLimit-Policy and RateLimit (IETF draft); `legacy`: X-RateLimit-*; `both`; or none. */
export type RateLimitHeaderMode = 'ietf' | 'legacy' | 'both' | false;

export const HEADER_MODES: readonly RateLimitHeaderMode[] = ['ietf', 'legacy', 'both', false];

/** Structured-field integers have at most 15 digits (RFC 9651), and so have our header values. */
export const MAX_HEADER_INTEGER = 999_999_999_999_999;

/** Whole seconds for a header: rounded up, and never more digits than a header integer holds. */
export function headerSeconds(ms: number): number {
  return Math.min(MAX_HEADER_INTEGER, Math.ceil(ms / 1000));
}

/** `"<name>";q=<limit>;w=<window s>` per rule: fixed per rule set, so built once at start-up. */
export function policyHeader(rules: readonly RateLimitRule[]): string {
  return rules.map((rule) => `"${rule.name}";q=${rule.limit};w=${rule.windowMs / 1000}`).join(', ');
}

/**
 * The rules with names unique among them: a later rule whose name is taken (a route bucket
 * called like the module's `default` limit, say) gets `-2`, `-3`... Clients tell the items of
 * `RateLimit-Policy` apart by name only.
 */
export function withUniqueNames(rules: readonly RateLimitRule[]): RateLimitRule[] {
  const taken = new Set<string>();
  return rules.map((rule) => {
    let name = rule.name;
    for (let n = 2; taken.has(name); n++) name = `${rule.name}-${n}`;
    taken.add(name);
    return name === rule.name ? rule : { ...rule, name };
  });
}

/** A name that is safe inside a structured-field string: printable ASCII without `"` or `\`. */
export function policyName(raw: string): string {
  return raw.replace(/[^\x20-\x7e]|["\\]/g, '_');
}

/** The denied rule that waits longest or, if all passed, the rule with least quota left. */
export function mostConstraining(decisions: readonly RateLimitDecision[]): RateLimitDecision {
  let worst = decisions[0];
  for (let i = 1; i < decisions.length; i++) {
    const d = decisions[i];
    const tighter = worst.allowed
      ? !d.allowed || d.remaining < worst.remaining || (d.remaining === worst.remaining && d.resetMs > worst.resetMs)
      : !d.allowed && d.retryAfterMs > worst.retryAfterMs;
    if (tighter) worst = d;
  }
  return worst;
}

/** Seconds until more quota: the retry delay when denied, the reset when allowed (or when waiting cannot help). */
export function secondsUntilQuota(decision: RateLimitDecision): number {
  const wait = decision.allowed || decision.retryAfterMs === Infinity ? decision.resetMs : decision.retryAfterMs;
  return headerSeconds(wait);
}

/**
 * Calls `write(target, name, value)` for each rate-limit header of one result, in the chosen mode.
 * Names are lowercase, as HTTP/2 sends them: HTTP/1.1 names are case-insensitive, and Node and
 * Fastify lowercase a name before storing it, which for a lowercase name costs nothing.
 */
export function forEachRateLimitHeader<T>(
  mode: RateLimitHeaderMode,
  result: RateLimitResult,
  policy: string,
  target: T,
  write: (target: T, name: string, value: string) => void,
): void {
  if (mode === false) return;
  const worst = result.decisions.length === 1 ? result.decisions[0] : mostConstraining(result.decisions);
  const seconds = secondsUntilQuota(worst);
  const remaining = Math.min(worst.remaining, MAX_HEADER_INTEGER);
  if (mode !== 'legacy') {
    write(target, 'ratelimit-policy', policy);
    write(target, 'ratelimit', `"${worst.rule.name}";r=${remaining};t=${seconds}`);
  }
  if (mode !== 'ietf') {
    write(target, 'x-ratelimit-limit', String(worst.limit));
    write(target, 'x-ratelimit-remaining', String(remaining));
    write(target, 'x-ratelimit-reset', String(seconds));
  }
}

/** The rate-limit header pairs for one result, in the chosen mode. */
export function rateLimitHeaders(mode: RateLimitHeaderMode, result: RateLimitResult, policy: string): [string, string][] {
  const headers: [string, string][] = [];
  forEachRateLimitHeader(mode, result, policy, headers, (list, name, value) => list.push([name, value]));
  return headers;
}

/**
 * The headers of a concurrency-limit denial: `RateLimit-Policy: "<name>";q=<limit>;qu="concurrent-requests"`
 * (the IETF draft's quota unit for requests in flight) and `RateLimit: "<name>";r=0;t=<seconds>`,
 * or the `X-RateLimit-*` trio in legacy mode. Fixed per route, so built once at start-up.
 */
export function concurrencyDeniedHeaders(mode: RateLimitHeaderMode, name: string, limit: number, retryAfterMs: number): [string, string][] {
  const headers: [string, string][] = [];
  const seconds = String(headerSeconds(retryAfterMs));
  if (mode === false) return headers;
  if (mode !== 'legacy') {
    headers.push(['ratelimit-policy', `"${name}";q=${limit};qu="concurrent-requests"`], ['ratelimit', `"${name}";r=0;t=${seconds}`]);
  }
  if (mode !== 'ietf') {
    headers.push(['x-ratelimit-limit', String(limit)], ['x-ratelimit-remaining', '0'], ['x-ratelimit-reset', seconds]);
  }
  return headers;
}
