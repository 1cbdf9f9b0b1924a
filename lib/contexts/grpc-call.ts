import type { ArgumentsHost } from '@nestjs/common';
import { RateLimitExceededException } from '../exceptions/rate-limit-exceeded.exception.js';
import type { RateLimitRefusal } from './rate-limit-context-adapter.interface.js';

/**
 * gRPC calls as Nest's gRPC server hands them to a handler: `(request, metadata, call)`, in an
 * `rpc` context. Read without importing `@grpc/grpc-js`, which the library does not depend on:
 * new metadata is made with the constructor of the call's own.
 */

/** The parts of grpc-js's Metadata used here. */
interface MetadataLike {
  set(key: string, value: string | Buffer): void;
  constructor: new () => MetadataLike;
}

/** The parts of grpc-js's server calls (unary, readable, writable, duplex) used here. */
interface GrpcCallLike {
  getPeer(): string;
  cancelled?: boolean;
  metadata?: MetadataLike;
  /** Server-streaming and bidirectional calls write responses. */
  write?: unknown;
  /** Client-streaming and bidirectional calls read requests. */
  read?: unknown;
}

/** gRPC status codes (grpc/status.proto). */
export const GRPC_RESOURCE_EXHAUSTED = 8;
export const GRPC_UNAVAILABLE = 14;

/** The call of a gRPC handler's context; undefined on every other transport. */
export function grpcCallOf(host: ArgumentsHost): GrpcCallLike | undefined {
  const call = host.getArgByIndex<GrpcCallLike | undefined>(2);
  return typeof call?.getPeer === 'function' && isMetadata(host.getArgByIndex(1)) ? call : undefined;
}

function isMetadata(value: unknown): value is MetadataLike {
  return typeof (value as MetadataLike | undefined)?.set === 'function' && typeof (value as { getMap?: unknown }).getMap === 'function';
}

/** Whether the call streams requests or responses: its work ends when its stream does. */
export function isGrpcStream(call: GrpcCallLike): boolean {
  return typeof call.write === 'function' || typeof call.read === 'function';
}

/**
 * The caller's address from grpc-js's peer: `ipv4:10.0.0.1:5000`, `ipv6:[::1]:5000`; undefined
 * for a peer with no IP (a Unix socket), which then needs a `key`.
 */
export function grpcPeerAddress(peer: string | undefined): string | undefined {
  if (peer === undefined) return undefined;
  if (peer.startsWith('ipv6:[')) {
    const end = peer.indexOf(']');
    return end > 6 ? peer.slice(6, end) : undefined;
  }
  const hostPort = peer.startsWith('ipv4:') ? peer.slice(5) : peer;
  if (hostPort.startsWith('unix:')) return undefined;
  const colon = hostPort.lastIndexOf(':');
  return colon > 0 ? hostPort.slice(0, colon) : hostPort || undefined;
}

/**
 * The error a refused call ends with, in the form grpc-js sends as the call's status: `code`,
 * `details`, and trailing metadata with `retry-after` (whole seconds) and a `google.rpc.Status`
 * carrying a `google.rpc.RetryInfo` in `grpc-status-details-bin`, as Google APIs send them.
 */
export function grpcRefusal(refusal: RateLimitRefusal, call: GrpcCallLike): Error {
  const code = refusal instanceof RateLimitExceededException ? GRPC_RESOURCE_EXHAUSTED : GRPC_UNAVAILABLE;
  const details = refusal instanceof RateLimitExceededException ? `${refusal.message} (policy "${refusal.details.rule.name}")` : refusal.message;
  const error = Object.assign(new Error(details), { code, details, metadata: undefined as MetadataLike | undefined });
  const Metadata = call.metadata?.constructor;
  if (Metadata !== undefined) {
    const trailers = new Metadata();
    if (refusal.retryAfter !== null) {
      trailers.set('retry-after', String(refusal.retryAfter));
      trailers.set('grpc-status-details-bin', statusWithRetryInfo(code, details, refusal.retryAfter));
    }
    error.metadata = trailers;
  }
  return error;
}

/** `google.rpc.Status { code, message, details: [Any(RetryInfo { retry_delay: Duration { seconds } })] }`, encoded. */
export function statusWithRetryInfo(code: number, message: string, retryAfterSeconds: number): Buffer {
  const duration = field(1, varint(retryAfterSeconds)); // Duration.seconds
  const retryInfo = lengthDelimited(1, duration); // RetryInfo.retry_delay
  const any = Buffer.concat([
    lengthDelimited(1, Buffer.from('type.googleapis.com/google.rpc.RetryInfo')), // Any.type_url
    lengthDelimited(2, retryInfo), // Any.value
  ]);
  return Buffer.concat([field(1, varint(code)), lengthDelimited(2, Buffer.from(message)), lengthDelimited(3, any)]);
}

/** A varint field (wire type 0). */
function field(number: number, value: Buffer): Buffer {
  return Buffer.concat([varint(number << 3), value]);
}

/** A length-delimited field (wire type 2). */
function lengthDelimited(number: number, bytes: Buffer): Buffer {
  return Buffer.concat([varint((number << 3) | 2), varint(bytes.length), bytes]);
}

/** A non-negative integer as a protobuf varint. */
function varint(value: number): Buffer {
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}
