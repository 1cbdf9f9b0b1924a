// Load generators. Both run in the runner's process, never in the app's, and both stop by themselves.
//
// - saturate(): autocannon, closed loop (each connection sends its next request when the previous
//   answer arrives): the server's maximum throughput, and its latency when saturated.
// - paced(): an open-loop generator at a fixed rate, spread evenly over each second. autocannon's
//   `overallRate` is not used for this: it lets every connection send its whole per-second quota
//   back to back at the start of each second and then idle, so the "fixed rate" run is in fact a
//   saturated burst followed by silence, and its latencies are those of a saturated server.
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { latencyOf, Samples, type Latency } from './stats.js';

export const KEY_HEADER = 'x-api-key';

export interface LoadResult {
  /** Completed responses per second over the run. */
  rps: number;
  durationSec: number;
  responses: number;
  /** Responses by status code. */
  status: Record<number, number>;
  /** Connection errors and timeouts. */
  errors: number;
  /** Latency of every response (whatever its status), ms, sub-millisecond resolution. */
  latency: Latency;
}

/** The raw HTTP/1.1 request of each client key: `key-0` … `key-(n-1)`, or one fixed key. */
export function requestBuffers(port: number, path: string, keys: number | string): Buffer[] {
  const names = typeof keys === 'string' ? [keys] : Array.from({ length: keys }, (_, i) => `key-${i}`);
  return names.map((key) =>
    Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: keep-alive\r\n${KEY_HEADER}: ${key}\r\n\r\n`, 'latin1'),
  );
}

export interface SaturateOptions {
  port: number;
  path: string;
  /** Client keys to rotate through (one after another across all connections), or one fixed key. */
  keys: number | string;
  connections: number;
  durationSec: number;
}

/** Closed-loop load with autocannon for `durationSec`. */
export async function saturate({ port, path, keys, connections, durationSec }: SaturateOptions): Promise<LoadResult> {
  const buffers = requestBuffers(port, path, keys);
  let next = 0;
  const latencies = new Samples();
  const status: Record<number, number> = {};
  // Without a callback, autocannon returns its run as an event emitter that is also a promise.
  const instance = autocannon({
    url: `http://127.0.0.1:${port}${path}`,
    connections,
    duration: durationSec,
    // Each request carries the next key of one global rotation. autocannon rebuilds a request
    // per send when a `setupRequest` hook rotates headers; serving prebuilt buffers is cheaper for
    // the load generator, which shares the machine with the app.
    setupClient: (client) => {
      (client as unknown as { getRequestBuffer(): Buffer }).getRequestBuffer = () => buffers[next++ % buffers.length];
    },
  }) as unknown as autocannon.Instance & Promise<autocannon.Result>;
  instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTimeMs: number) => {
    status[statusCode] = (status[statusCode] ?? 0) + 1;
    latencies.push(responseTimeMs);
  });
  const result = await instance;
  return {
    rps: latencies.count / result.duration,
    durationSec: result.duration,
    responses: latencies.count,
    status,
    errors: result.errors + result.timeouts,
    latency: latencyOf(latencies.toArray()),
  };
}

export interface PacedOptions extends SaturateOptions {
  /** Requests per second, sent evenly (every millisecond, the requests then due). */
  rate: number;
}

export interface PacedResult extends LoadResult {
  /** Requests that found every connection busy and waited for one (sent late). */
  late: number;
}

/**
 * Open-loop load at a fixed rate. Latency is measured from the write of a request to the last
 * byte of its response; a request that finds every connection busy (the server stalled for
 * longer than `connections / rate`) waits for one, counts as `late`, and its latency counts from
 * when it fell due, so stalls are not hidden (no coordinated omission).
 */
export async function paced({ port, path, keys, connections, durationSec, rate }: PacedOptions): Promise<PacedResult> {
  const buffers = requestBuffers(port, path, keys);
  const latencies = new Samples();
  const status: Record<number, number> = {};
  let errors = 0;
  let late = 0;
  let nextKey = 0;
  let inFlight = 0;
  let stopping = false;
  const idle: Connection[] = [];
  /** When each request that found no idle connection fell due: its latency counts from then. */
  const waiting: number[] = [];

  const send = (connection: Connection, dueAt?: number) => {
    inFlight++;
    connection.send(buffers[nextKey++ % buffers.length], dueAt);
  };
  const onFree = (connection: Connection) => {
    if (stopping) return;
    const dueAt = waiting.shift();
    if (dueAt === undefined) idle.push(connection);
    else send(connection, dueAt);
  };
  const onResponse = (connection: Connection, statusCode: number, latencyMs: number) => {
    inFlight--;
    status[statusCode] = (status[statusCode] ?? 0) + 1;
    latencies.push(latencyMs);
    onFree(connection);
  };
  const onBroken = (connection: Connection, wasBusy: boolean) => {
    if (wasBusy) inFlight--;
    const index = idle.indexOf(connection);
    if (index >= 0) idle.splice(index, 1);
    if (stopping) return;
    errors++;
    Connection.open(port, onResponse, onBroken).then((replacement) => {
      pool.add(replacement);
      onFree(replacement);
    }, () => errors++);
  };

  const pool = new Set(await Promise.all(Array.from({ length: connections }, () => Connection.open(port, onResponse, onBroken))));
  idle.push(...pool);

  const start = performance.now();
  const end = start + durationSec * 1_000;
  let scheduled = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const now = Math.min(performance.now(), end);
      const due = Math.floor(((now - start) * rate) / 1_000);
      for (; scheduled < due; scheduled++) {
        const connection = idle.shift();
        if (connection) send(connection);
        else {
          waiting.push(start + (scheduled * 1_000) / rate); // when it fell due
          late++;
        }
      }
      if (now >= end) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  // Let the last answers arrive (at most 2 s), then close everything.
  const drainUntil = performance.now() + 2_000;
  while ((inFlight > 0 || waiting.length > 0) && performance.now() < drainUntil) await sleep(5);
  stopping = true;
  for (const connection of pool) connection.close();
  const durationSec_ = (end - start) / 1_000;
  return {
    rps: latencies.count / durationSec_,
    durationSec: durationSec_,
    responses: latencies.count,
    status,
    errors: errors + inFlight + waiting.length,
    late,
    latency: latencyOf(latencies.toArray()),
  };
}

/** One keep-alive connection carrying one request at a time, with just enough HTTP parsing. */
class Connection {
  private pending = false;
  private sentAt = 0;
  private buffer: Buffer | null = null;
  private closed = false;

  private constructor(
    private readonly socket: Socket,
    private readonly onResponse: (connection: Connection, status: number, latencyMs: number) => void,
    private readonly onBroken: (connection: Connection, wasBusy: boolean) => void,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      if (this.closed) return;
      this.closed = true;
      this.onBroken(this, this.pending);
    });
  }

  static open(
    port: number,
    onResponse: (connection: Connection, status: number, latencyMs: number) => void,
    onBroken: (connection: Connection, wasBusy: boolean) => void,
  ): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => resolve(new Connection(socket, onResponse, onBroken)));
      socket.once('error', reject);
    });
  }

  /** Writes a request; its latency counts from `dueAt` if it was held back, else from now. */
  send(request: Buffer, dueAt?: number): void {
    this.pending = true;
    this.sentAt = dueAt ?? performance.now();
    this.socket.write(request);
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private receive(chunk: Buffer): void {
    this.buffer = this.buffer ? Buffer.concat([this.buffer, chunk]) : chunk;
    for (;;) {
      const headerEnd: number = this.buffer.indexOf('\r\n\r\n');
      if (headerEnd < 0) return;
      const head = this.buffer.toString('latin1', 0, headerEnd);
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      if (!length) throw new Error(`paced load: a response without Content-Length:\n${head}`);
      const total: number = headerEnd + 4 + Number(length[1]);
      if (this.buffer.length < total) return;
      const statusCode = Number(head.slice(9, 12));
      this.buffer = this.buffer.length > total ? this.buffer.subarray(total) : null;
      this.pending = false;
      this.onResponse(this, statusCode, performance.now() - this.sentAt);
      if (!this.buffer) return;
    }
  }
}
