import type { ArgumentsHost, ExecutionContext } from '@nestjs/common';
import { mostConstraining, rateLimitHeaders, type RateLimitHeaderMode } from '../headers/rate-limit-headers.js';
import type { RateLimitDecision, RateLimitResult } from '../storage/rate-limit-decision.js';
import { setHttpHeader } from './http.context-adapter.js';
import type { RateLimitContextAdapter, RateLimitRefusal } from './rate-limit-context-adapter.interface.js';
import { refusalPayload } from './refusal-payload.js';

/** The GraphQL context as Nest's Apollo driver builds it: the HTTP request and response. */
interface GraphQLContextValue {
  req?: unknown;
  request?: unknown;
  res?: unknown;
  reply?: unknown;
}

/** What the response of one operation carries so far: its most constraining check. */
interface OperationHeaders {
  decision: RateLimitDecision;
  retryAfter: number | null;
}

const operations = new WeakMap<object, OperationHeaders>();

const contextValue = (context: ArgumentsHost) => context.getArgByIndex<GraphQLContextValue | undefined>(2);
const httpRequestOf = (context: ArgumentsHost) => {
  const value = contextValue(context);
  return value?.req ?? value?.request;
};
const httpResponseOf = (context: ArgumentsHost) => {
  const value = contextValue(context);
  return (value?.res ?? value?.reply) as object | undefined;
};

/** Records `decision` for the operation's response; true if it is now the most constraining. */
function constrains(response: object, decision: RateLimitDecision, retryAfter: number | null): boolean {
  const seen = operations.get(response);
  if (seen === undefined) {
    operations.set(response, { decision, retryAfter });
    return true;
  }
  if (retryAfter !== null) seen.retryAfter = Math.max(seen.retryAfter ?? 0, retryAfter);
  if (mostConstraining([seen.decision, decision]) !== decision) return false;
  seen.decision = decision;
  return true;
}

/**
 * GraphQL (Nest's Apollo driver): each call of a limited resolver is one check, so aliases count
 * apart. The key is read from the HTTP request carrying the operation (`req` in the GraphQL
 * context, as Nest's drivers set it). The response carries the headers of the operation's most
 * constraining check, and `Retry-After` once a field was denied. A denied resolver does not run:
 * its field is null, and `errors[]` holds `extensions: { code: 'RATE_LIMITED', retryAfter }`;
 * the other fields resolve, and the status stays 200.
 */
export const graphqlContext: RateLimitContextAdapter = {
  type: 'graphql',
  request: httpRequestOf,
  clientAddress: (context) => {
    const request = httpRequestOf(context) as { ip?: string; socket?: { remoteAddress?: string } } | undefined;
    return request?.ip ?? request?.socket?.remoteAddress;
  },
  admitted(context: ExecutionContext, result: RateLimitResult, policy: string, mode: RateLimitHeaderMode) {
    const response = httpResponseOf(context);
    if (response === undefined || mode === false) return;
    const worst = result.decisions.length === 1 ? result.decisions[0] : mostConstraining(result.decisions);
    if (!constrains(response, worst, null)) return;
    for (const [name, value] of rateLimitHeaders(mode, { ...result, decisions: [worst] }, policy)) setHttpHeader(response, name, value);
  },
  refuse(refusal: RateLimitRefusal, host: ArgumentsHost) {
    const response = httpResponseOf(host);
    if (response !== undefined) {
      const denied = 'details' in refusal ? deniedDecision(refusal.details) : undefined;
      if (denied === undefined || constrains(response, denied, refusal.retryAfter)) {
        for (const [name, value] of refusal.headers) setHttpHeader(response, name, value);
      }
      const retryAfter = denied === undefined ? refusal.retryAfter : operations.get(response)?.retryAfter;
      if (retryAfter !== null && retryAfter !== undefined) setHttpHeader(response, 'Retry-After', String(retryAfter));
    }
    const { code, retryAfter } = refusalPayload(refusal);
    // GraphQL takes an error's `extensions` as its own; a resolver returning an Error fails its field.
    return Object.assign(new Error(refusal.message), { extensions: { code, retryAfter } });
  },
};

function deniedDecision(details: import('../exceptions/rate-limit-exceeded.exception.js').RateLimitExceededDetails): RateLimitDecision {
  return {
    rule: details.rule,
    allowed: false,
    limit: details.limit,
    remaining: details.remaining,
    retryAfterMs: details.retryAfterMs,
    resetMs: details.resetMs,
  };
}
