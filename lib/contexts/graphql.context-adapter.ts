import type { ArgumentsHost, ContextType, ExecutionContext } from '@nestjs/common';
import type { RateLimitExceededDetails } from '../exceptions/rate-limit-exceeded.exception.js';
import { requestAddress, type AddressedRequest } from '../keys/client-ip.js';
import { mostConstraining, rateLimitHeaders, type RateLimitHeaderMode } from '../headers/rate-limit-headers.js';
import type { RateLimitDecision, RateLimitResult } from '../storage/rate-limit-decision.js';
import type { RateLimitRule } from '../rules/rate-limit-rule.js';
import { setHttpHeader } from './http.context-adapter.js';
import type { RateLimitContextAdapter, RateLimitRefusal } from './rate-limit-context-adapter.interface.js';
import { refusalPayload } from './refusal-payload.js';

/**
 * The GraphQL context. Nest's Apollo driver puts the HTTP request in it as `req` by default
 * (Express's request, or Fastify's); the response only if the app's `context` function adds it,
 * as `res` or `reply`. On Express the request leads to the response (`req.res`), so headers
 * need no `context` function there.
 */
interface GraphQLContextValue {
  req?: unknown;
  request?: unknown;
  res?: unknown;
  reply?: unknown;
}

/** `ExecutionContext.getType()` of a GraphQL resolver, as @nestjs/graphql names it (without importing it). */
export type GqlContextType = 'graphql' | ContextType;

/** The part of graphql-js's `GraphQLResolveInfo` read here: a top-level field's path has no `prev`. */
interface ResolveInfoLike {
  path?: { prev?: unknown };
  operation?: { operation?: string };
}

/**
 * The context graphql-ws gives an operation over a WebSocket (Nest's driver passes it to the
 * app's `context` function, and puts it as `req` by default): the connection's params, the
 * upgrade request and the socket.
 */
interface GraphQLWsContext {
  readonly connectionParams?: Readonly<Record<string, unknown>>;
  readonly extra: { readonly request: object; readonly socket: { readonly readyState: number } };
}

/** `WebSocket.OPEN` in ws, the socket graphql-ws serves on. */
const SOCKET_OPEN = 1;

/** What the response of one operation carries so far. */
interface OperationHeaders {
  /** Its most constraining check so far; undefined while only storage outages answered. */
  decision?: RateLimitDecision;
  /** The longest wait its refusals asked so far; null while none asked for one. */
  retryAfter: number | null;
}

/** Per HTTP response (one operation, or one batch of them): what its headers say so far. */
const operations = new WeakMap<object, OperationHeaders>();

const contextValue = (context: ArgumentsHost) => context.getArgByIndex<GraphQLContextValue | undefined>(2);

const isWsContext = (value: unknown): value is GraphQLWsContext => {
  const extra = (value as Partial<GraphQLWsContext> | undefined)?.extra;
  return typeof extra === 'object' && extra !== null && typeof extra.request === 'object' && typeof extra.socket === 'object';
};

/** The graphql-ws context of an operation that came over a WebSocket; undefined over HTTP. */
function graphqlWsContextOf(context: ArgumentsHost): GraphQLWsContext | undefined {
  const value = contextValue(context);
  if (isWsContext(value?.req)) return value.req;
  return isWsContext(value) ? value : undefined;
}

/** The request carrying the operation: the HTTP request, or a WebSocket's upgrade request. */
const requestOf = (context: ArgumentsHost) => {
  const ws = graphqlWsContextOf(context);
  if (ws !== undefined) return ws.extra.request;
  const value = contextValue(context);
  return value?.req ?? value?.request;
};

/** Whether `context` is a top-level field of a subscription: its resolver returns the event stream. */
export function isSubscription(context: ArgumentsHost): boolean {
  const info = context.getArgByIndex<ResolveInfoLike | undefined>(3);
  return info?.operation?.operation === 'subscription' && info.path !== undefined && info.path.prev === undefined;
}

const httpResponseOf = (context: ArgumentsHost) => {
  const value = contextValue(context);
  // over a WebSocket there is no response to carry headers (and `reply` may be graphql-ws's message)
  if (graphqlWsContextOf(context) !== undefined) return undefined;
  const response = value?.res ?? value?.reply ?? (requestOf(context) as { res?: unknown } | undefined)?.res;
  return typeof response === 'object' && response !== null ? response : undefined;
};

/** A header for the response, unless it already went out (an operation that outlived its response). */
function setHeader(response: object, name: string, value: string): void {
  const { headersSent, sent } = response as { headersSent?: boolean; sent?: boolean }; // Node's response, Fastify's reply
  if (headersSent !== true && sent !== true) setHttpHeader(response, name, value);
}

function stateOf(response: object): OperationHeaders {
  let state = operations.get(response);
  if (state === undefined) operations.set(response, (state = { retryAfter: null }));
  return state;
}

/** Records `decision` for the operation's response; true if it is now the most constraining. */
function constrains(state: OperationHeaders, decision: RateLimitDecision): boolean {
  if (state.decision !== undefined && mostConstraining([state.decision, decision]) !== decision) return false;
  state.decision = decision;
  return true;
}

/** The refusal as GraphQL reports it: graphql-js takes an error's `extensions` as its own. */
function graphqlError(refusal: RateLimitRefusal): Error {
  const { code, retryAfter } = refusalPayload(refusal);
  return Object.assign(new Error(refusal.message), { extensions: { code, retryAfter } });
}

/**
 * GraphQL (Nest's Apollo driver, on Express or Fastify): each call of a limited resolver is one
 * check, so aliases count apart. The key is read from the HTTP request carrying the operation
 * (`req` in the GraphQL context, as Nest's driver sets it), so `trust proxy` applies as on HTTP.
 * The response carries the headers of the operation's most constraining check, and `Retry-After`
 * (the longest wait asked) once a field was denied. A denied resolver does not run: its field is
 * null, and `errors[]` holds `extensions: { code: 'RATE_LIMITED', retryAfter }`; the other fields
 * resolve, and the status stays 200.
 *
 * Over graphql-ws (subscriptions, and any operation sent on the socket) the key is read from the
 * socket's upgrade request, so a client's subscriptions count under the identity of its queries;
 * there is no response to carry headers, and a refusal is the operation's error. A client whose
 * socket is no longer open is gone.
 */
export const graphqlContext: RateLimitContextAdapter = {
  type: 'graphql',
  request: requestOf,
  clientAddress: (context) => requestAddress(requestOf(context) as AddressedRequest | undefined),
  admitted(context: ExecutionContext, result: RateLimitResult, policy: string, mode: RateLimitHeaderMode) {
    const response = httpResponseOf(context);
    if (response === undefined || mode === false) return;
    const worst = result.decisions.length === 1 ? result.decisions[0] : mostConstraining(result.decisions);
    if (!constrains(stateOf(response), worst)) return;
    for (const [name, value] of rateLimitHeaders(mode, { ...result, decisions: [worst] }, policy)) setHeader(response, name, value);
  },
  /**
   * A field resolver's refusal is thrown as the GraphQL error itself: Nest runs exception filters
   * on field resolvers only when `fieldResolverEnhancers` includes 'filters', and without them
   * the exception would reach Apollo as an HTTP error (`INTERNAL_SERVER_ERROR`, status 429).
   * A top-level field's refusal goes through the exception filters, as on HTTP.
   */
  rejection(refusal: RateLimitRefusal, context: ExecutionContext) {
    const info = context.getArgByIndex<ResolveInfoLike | undefined>(3);
    if (info?.path === undefined || info.path.prev === undefined) return refusal;
    return graphqlContext.refuse(refusal, context);
  },
  refuse(refusal: RateLimitRefusal, host: ArgumentsHost) {
    const response = httpResponseOf(host);
    if (response !== undefined) {
      const state = stateOf(response);
      if ('details' in refusal && constrains(state, deniedDecision(refusal.details))) {
        for (const [name, value] of refusal.headers) setHeader(response, name, value);
      }
      if (refusal.retryAfter !== null) state.retryAfter = Math.max(state.retryAfter ?? 0, refusal.retryAfter);
      if (state.retryAfter !== null) setHeader(response, 'retry-after', String(state.retryAfter));
    }
    return graphqlError(refusal);
  },
  clientGone: (context) => {
    const ws = graphqlWsContextOf(context);
    if (ws !== undefined) return ws.extra.socket.readyState !== SOCKET_OPEN;
    const response = httpResponseOf(context) as { raw?: { closed?: boolean }; closed?: boolean } | undefined;
    return (response?.raw ?? response)?.closed === true;
  },
};

function deniedDecision(details: RateLimitExceededDetails): RateLimitDecision {
  return {
    rule: details.rule as RateLimitRule, // or a concurrency policy: only compared by its numbers here
    allowed: false,
    limit: details.limit,
    remaining: details.remaining,
    retryAfterMs: details.retryAfterMs,
    resetMs: details.resetMs,
  };
}
