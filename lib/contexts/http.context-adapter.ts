import { ServerResponse } from 'node:http';
import type { ArgumentsHost, ExecutionContext } from '@nestjs/common';
import { requestAddress } from '../keys/client-ip.js';
import { forEachRateLimitHeader, type RateLimitHeaderMode } from '../headers/rate-limit-headers.js';
import type { RateLimitResult } from '../storage/rate-limit-decision.js';
import type { RateLimitContextAdapter, RateLimitRefusal } from './rate-limit-context-adapter.interface.js';
import { rawResponseOf } from '../outcomes/request-outcome.js';

/** An Express (Node) response or a Fastify reply. */
type HttpResponse = ServerResponse | FastifyReplyLike;

interface FastifyReplyLike {
  header(name: string, value: string): unknown;
  code(status: number): unknown;
  type(contentType: string): unknown;
  send(body: string): unknown;
  readonly sent?: boolean;
}

/** Sets one header on an Express response or a Fastify reply. */
export function setHttpHeader(response: unknown, name: string, value: string): void {
  if (response instanceof ServerResponse) response.setHeader(name, value);
  else (response as FastifyReplyLike).header(name, value);
}

// Node's own call, not Express's `res.set`, which looks at every value's type and content type.
const setNodeHeader = (response: ServerResponse, name: string, value: string) => response.setHeader(name, value);
const setReplyHeader = (reply: FastifyReplyLike, name: string, value: string) => reply.header(name, value);

/**
 * HTTP on Express or Fastify. The request is the platform's (`req.ip` honours `trust proxy` on
 * Express and `trustProxy` on Fastify); headers go on the response.
 *
 * A refusal is written directly: on Express to the Node response, skipping `send`, which would
 * hash the body for an ETag and check freshness, meaningless for a refusal and costlier than the
 * rest of it; on Fastify through the reply, so its hooks and headers set earlier (CORS) apply.
 */
export const httpContext: RateLimitContextAdapter = {
  type: 'http',
  request: (context) => context.getArgByIndex(0),
  clientAddress: (context) => requestAddress(context.getArgByIndex(0)),
  admitted(context: ExecutionContext, result: RateLimitResult, policy: string, mode: RateLimitHeaderMode) {
    const response = context.getArgByIndex<HttpResponse>(1);
    if (response instanceof ServerResponse) forEachRateLimitHeader(mode, result, policy, response, setNodeHeader);
    else forEachRateLimitHeader(mode, result, policy, response, setReplyHeader);
  },
  refuse(refusal: RateLimitRefusal, host: ArgumentsHost) {
    const response = host.getArgByIndex<HttpResponse>(1);
    const body = JSON.stringify(refusal.getResponse());
    if (response instanceof ServerResponse) {
      if (response.headersSent) return;
      const headers: string[] = [];
      for (const [name, value] of refusal.headers) headers.push(name, value);
      if (refusal.retryAfter !== null) headers.push('retry-after', String(refusal.retryAfter));
      headers.push('Content-Type', refusal.contentType, 'Content-Length', String(Buffer.byteLength(body)));
      // Node leaves out the body of a HEAD response by itself.
      response.writeHead(refusal.getStatus(), headers);
      response.end(body);
      return;
    }
    if (response.sent) return;
    for (const [name, value] of refusal.headers) response.header(name, value);
    if (refusal.retryAfter !== null) response.header('retry-after', String(refusal.retryAfter));
    response.code(refusal.getStatus());
    response.type(refusal.contentType);
    response.send(body);
  },
  clientGone: (context) => rawResponseOf(context)?.closed === true,
};
