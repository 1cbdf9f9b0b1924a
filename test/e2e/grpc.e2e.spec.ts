/**
 * gRPC (Transport.GRPC, @GrpcMethod, @GrpcStreamMethod) end to end, with a real `@grpc/grpc-js`
 * client on a loopback port, on memory and Redis storage: a refused call ends with the status a
 * gRPC client's retry policy reads (RESOURCE_EXHAUSTED, UNAVAILABLE under `deny`), `retry-after`
 * and a google.rpc.RetryInfo in its trailers; the default key is the call's peer; every kind of
 * method is limited; `@ConcurrencyLimit` holds a slot until the stream ends or is cancelled.
 */
import 'reflect-metadata';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { Controller, Logger, type INestMicroservice } from '@nestjs/common';
import { GrpcMethod, GrpcStreamMethod, Transport, type MicroserviceOptions } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { finalize, from, map, Observable, toArray, type Subscriber } from 'rxjs';
import { ConcurrencyLimit, RateLimit, RateLimitModule, type RateLimitDecisionEvent, type RateLimitModuleOptions } from '../../lib/index.js';
import { exact } from '../support/exact.js';
import { FakeClock } from '../support/fake-clock.js';
import { onFreePort, startPrivateRedis, startRedis, type ControllableRedis, type TestRedis } from '../support/redis-server.js';
import { storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';
import { until } from '../support/until.js';

const PROTO = fileURLToPath(new URL('./fixtures/limited.proto', import.meta.url));

interface Req {
  id: string;
}
interface Res {
  id: string;
  n: number;
}

/** Handler runs by method: a refused call must not add to them. */
const runs: Record<string, number> = {};
const ran = (method: string) => (runs[method] = (runs[method] ?? 0) + 1);
/** The open `Watch` streams by request id, for the test to end them. */
const watching = new Map<string, Subscriber<Res>>();
/** How many Chat streams the server has open. */
const chats = { open: 0 };

const apiKeyOf = (metadata: grpc.Metadata) => metadata.get('x-api-key')[0]?.toString();

@Controller()
class LimitedController {
  @GrpcMethod('Limited', 'Unary')
  @RateLimit('2/minute')
  unary(request: Req): Res {
    return { id: request.id, n: ran('unary') };
  }

  @GrpcMethod('Limited', 'Keyed')
  @RateLimit('2/minute', { key: (context) => apiKeyOf(context.switchToRpc().getContext<grpc.Metadata>()) })
  keyed(request: Req): Res {
    return { id: request.id, n: ran('keyed') };
  }

  @GrpcMethod('Limited', 'Guarded')
  @RateLimit('2/minute', { onStorageError: 'deny' })
  guarded(request: Req): Res {
    return { id: request.id, n: ran('guarded') };
  }

  @GrpcMethod('Limited', 'ServerStream')
  @RateLimit('2/minute')
  serverStream(request: Req): Observable<Res> {
    ran('serverStream');
    return from([1, 2].map((n) => ({ id: request.id, n })));
  }

  @GrpcStreamMethod('Limited', 'ClientStream')
  @RateLimit('2/minute')
  clientStream(requests: Observable<Req>): Observable<Res> {
    ran('clientStream');
    return requests.pipe(
      toArray(),
      map((all) => ({ id: all.map((r) => r.id).join(','), n: all.length })),
    );
  }

  @GrpcStreamMethod('Limited', 'Bidi')
  @RateLimit('2/minute')
  bidi(requests: Observable<Req>): Observable<Res> {
    ran('bidi');
    return requests.pipe(map((request, i) => ({ id: request.id, n: i + 1 })));
  }

  @GrpcMethod('Limited', 'Watch')
  @ConcurrencyLimit(2)
  watch(request: Req): Observable<Res> {
    return new Observable<Res>((subscriber) => {
      watching.set(request.id, subscriber);
      // at once, so the client knows it was admitted; a 'quiet' stream has nothing to say yet
      if (!request.id.startsWith('quiet')) subscriber.next({ id: request.id, n: 0 });
      return () => watching.delete(request.id);
    });
  }

  /** Echoes each message at once; ends when the client ends its side. */
  @GrpcStreamMethod('Limited', 'Chat')
  @ConcurrencyLimit(1)
  chat(requests: Observable<Req>): Observable<Res> {
    chats.open++;
    return requests.pipe(
      map((request, i) => ({ id: request.id, n: i + 1 })),
      finalize(() => chats.open--),
    );
  }

  /** Answers once the client has sent everything. */
  @GrpcStreamMethod('Limited', 'Upload')
  @ConcurrencyLimit(1)
  upload(requests: Observable<Req>): Observable<Res> {
    return requests.pipe(
      toArray(),
      map((all) => ({ id: 'upload', n: all.length })),
    );
  }
}

type LimitedClient = grpc.Client & Record<string, any>;

function loadClient(port: number): LimitedClient {
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, defaults: true });
  const { limited } = grpc.loadPackageDefinition(definition) as any;
  return new limited.Limited(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: grpc.ServiceError };

function unary(client: LimitedClient, method: string, id: string, metadata = new grpc.Metadata()): Promise<Outcome<Res>> {
  return new Promise((resolve) =>
    client[method]({ id }, metadata, (error: grpc.ServiceError | null, value: Res) => resolve(error ? { ok: false, error } : { ok: true, value })),
  );
}

/** Reads a response stream to its end, or its error. */
function readAll(call: grpc.ClientReadableStream<Res> | grpc.ClientDuplexStream<Req, Res>): Promise<Outcome<Res[]>> {
  return new Promise((resolve) => {
    const values: Res[] = [];
    call.on('data', (value: Res) => values.push(value));
    call.on('error', (error: grpc.ServiceError) => resolve({ ok: false, error }));
    call.on('end', () => resolve({ ok: true, value: values }));
  });
}

/** The client streams of `Upload` the test is still writing to. */
const uploading: grpc.ClientWritableStream<Req>[] = [];

function upload(client: LimitedClient, ids: string[]): Promise<Outcome<Res>> {
  return new Promise((resolve) => {
    const call = client.Upload((error: grpc.ServiceError | null, value: Res) => resolve(error ? { ok: false, error } : { ok: true, value }));
    for (const id of ids) call.write({ id });
    call.end();
  });
}

function clientStream(client: LimitedClient, ids: string[]): Promise<Outcome<Res>> {
  return new Promise((resolve) => {
    const call = client.ClientStream((error: grpc.ServiceError | null, value: Res) => resolve(error ? { ok: false, error } : { ok: true, value }));
    for (const id of ids) call.write({ id });
    call.end();
  });
}

function bidi(client: LimitedClient, ids: string[]): Promise<Outcome<Res[]>> {
  const call: grpc.ClientDuplexStream<Req, Res> = client.Bidi();
  const outcome = readAll(call);
  for (const id of ids) call.write({ id });
  call.end();
  return outcome;
}

/** Opens a `Chat` and says one thing: admitted once it is echoed, or refused with its status. */
function chat(client: LimitedClient, id: string): Promise<{ call: grpc.ClientDuplexStream<Req, Res>; admitted: boolean; ended: Promise<Outcome<Res[]>>; error?: grpc.ServiceError }> {
  const call: grpc.ClientDuplexStream<Req, Res> = client.Chat();
  const ended = readAll(call);
  call.write({ id });
  return new Promise((resolve) => {
    call.once('data', () => resolve({ call, admitted: true, ended }));
    call.on('error', (error: grpc.ServiceError) => resolve({ call, admitted: false, ended, error }));
  });
}

/** Opens a `Watch` stream: admitted once its first value arrives, or refused with its status. */
function watch(client: LimitedClient, id: string): Promise<{ call: grpc.ClientReadableStream<Res>; admitted: boolean; error?: grpc.ServiceError }> {
  const call: grpc.ClientReadableStream<Res> = client.Watch({ id });
  return new Promise((resolve) => {
    call.once('data', () => resolve({ call, admitted: true }));
    call.on('error', (error: grpc.ServiceError) => resolve({ call, admitted: false, error }));
  });
}

/** Opens `Watch` streams until one is admitted: a slot comes back one storage call after its stream's teardown. */
async function watchOnceFree(client: LimitedClient, id: string, what: string): Promise<Awaited<ReturnType<typeof watch>>> {
  let admitted: Awaited<ReturnType<typeof watch>> | undefined;
  await until(async () => (admitted = await watch(client, id)).admitted, what);
  return admitted!;
}

/** A minimal protobuf reader: the fields of one message, by number (varints as numbers, the rest as bytes). */
function fields(bytes: Buffer): Map<number, (number | Buffer)[]> {
  const out = new Map<number, (number | Buffer)[]>();
  let at = 0;
  const varint = () => {
    let value = 0;
    let scale = 1;
    for (;;) {
      const byte = bytes[at++];
      value += (byte & 0x7f) * scale;
      scale *= 128;
      if (byte < 0x80) return value;
    }
  };
  while (at < bytes.length) {
    const tag = varint();
    let value: number | Buffer;
    if ((tag & 7) === 0) value = varint();
    else {
      const length = varint();
      value = bytes.subarray(at, at + length);
      at += length;
    }
    out.set(tag >> 3, [...(out.get(tag >> 3) ?? []), value]);
  }
  return out;
}

/** What `grpc-status-details-bin` says: google.rpc.Status with its RetryInfo's delay. */
function statusDetails(metadata: grpc.Metadata) {
  const [raw] = metadata.get('grpc-status-details-bin') as Buffer[];
  const status = fields(raw);
  const any = fields(status.get(3)![0] as Buffer);
  const retryInfo = fields(any.get(2)![0] as Buffer);
  const duration = fields(retryInfo.get(1)![0] as Buffer);
  return {
    code: status.get(1)![0],
    message: (status.get(2)![0] as Buffer).toString(),
    typeUrl: (any.get(1)![0] as Buffer).toString(),
    retryDelaySeconds: duration.get(1)![0],
  };
}

async function startService(options: RateLimitModuleOptions, port: number): Promise<INestMicroservice> {
  const moduleRef = await Test.createTestingModule({ imports: [RateLimitModule.forRoot(exact(options))], controllers: [LimitedController] }).compile();
  const app = moduleRef.createNestMicroservice<MicroserviceOptions>({
    transport: Transport.GRPC,
    options: { package: 'limited', protoPath: PROTO, url: `127.0.0.1:${port}`, loader: { keepCase: true, defaults: true } },
    logger: false,
  });
  try {
    await app.listen();
  } catch (error) {
    await app.close(); // a port taken since freePort found it: onFreePort tries another
    throw error;
  }
  return app;
}

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe.each(storageKinds(() => redis))('gRPC on $name storage', (target: StorageTarget) => {
  let app: INestMicroservice;
  let client: LimitedClient;
  const decisions: RateLimitDecisionEvent[] = [];

  beforeEach(async () => {
    await redis.flush();
    for (const method of Object.keys(runs)) delete runs[method];
    decisions.length = 0;
    let port = 0;
    app = await onFreePort((free) => startService({ storage: target.create(new FakeClock()), onDecision: (event) => decisions.push(event) }, (port = free)));
    client = loadClient(port);
  });
  afterEach(async () => {
    for (const call of uploading.splice(0)) call.end();
    client?.close();
    await app?.close();
  });

  it('a unary call past its limit ends with RESOURCE_EXHAUSTED, retry-after and a RetryInfo, and its handler does not run', async () => {
    expect(await unary(client, 'Unary', 'a')).toEqual({ ok: true, value: { id: 'a', n: 1 } });
    expect(await unary(client, 'Unary', 'b')).toEqual({ ok: true, value: { id: 'b', n: 2 } });
    const refused = await unary(client, 'Unary', 'c');
    expect(refused.ok).toBe(false);
    const { error } = refused as { error: grpc.ServiceError };
    expect(error.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(error.details).toBe('Rate limit exceeded (policy "LimitedController.unary")');
    const retryAfter = error.metadata.get('retry-after');
    expect(retryAfter).toHaveLength(1);
    expect(String(retryAfter[0])).toMatch(/^\d+$/);
    expect(Number(retryAfter[0])).toBe(60);
    expect(statusDetails(error.metadata)).toEqual({
      code: grpc.status.RESOURCE_EXHAUSTED,
      message: 'Rate limit exceeded (policy "LimitedController.unary")',
      typeUrl: 'type.googleapis.com/google.rpc.RetryInfo',
      retryDelaySeconds: 60,
    });
    expect(runs.unary).toBe(2);
  });

  it("counts a call against the caller's address, from the call's peer, with no `key`", async () => {
    await unary(client, 'Unary', 'a');
    expect(decisions.map((event) => event.identity)).toEqual(['ip:127.0.0.1']);
    // a second connection from the same address shares the budget
    const other = loadClient(Number((client.getChannel().getTarget().match(/:(\d+)$/) ?? [])[1]));
    try {
      expect((await unary(other, 'Unary', 'b')).ok).toBe(true);
      expect((await unary(other, 'Unary', 'c')) as unknown).toMatchObject({ ok: false, error: { code: grpc.status.RESOURCE_EXHAUSTED } });
    } finally {
      other.close();
    }
  });

  it('a key function reads the call metadata: each API key has its own budget', async () => {
    const withKey = (key: string) => {
      const metadata = new grpc.Metadata();
      metadata.set('x-api-key', key);
      return metadata;
    };
    for (const id of ['1', '2']) expect((await unary(client, 'Keyed', id, withKey('alice'))).ok).toBe(true);
    expect(await unary(client, 'Keyed', '3', withKey('alice'))).toMatchObject({ ok: false, error: { code: grpc.status.RESOURCE_EXHAUSTED } });
    expect((await unary(client, 'Keyed', '4', withKey('bob'))).ok).toBe(true);
    expect(decisions.map((event) => event.identity)).toEqual(['alice', 'alice', 'alice', 'bob']);
    expect(runs.keyed).toBe(3);
  });

  it('server-streaming, client-streaming and bidirectional calls are limited, and refused with the same status', async () => {
    for (let i = 0; i < 2; i++) expect(await readAll(client.ServerStream({ id: 's' }))).toEqual({ ok: true, value: [{ id: 's', n: 1 }, { id: 's', n: 2 }] });
    const serverRefused = await readAll(client.ServerStream({ id: 's' }));
    expect(serverRefused).toMatchObject({ ok: false, error: { code: grpc.status.RESOURCE_EXHAUSTED, details: 'Rate limit exceeded (policy "LimitedController.serverStream")' } });
    expect(Number((serverRefused as { error: grpc.ServiceError }).error.metadata.get('retry-after')[0])).toBe(60);

    for (let i = 0; i < 2; i++) expect(await clientStream(client, ['x', 'y'])).toEqual({ ok: true, value: { id: 'x,y', n: 2 } });
    // a budget of its own: @GrpcStreamMethod wraps the method in a function with no name
    expect(await clientStream(client, ['x', 'y'])).toMatchObject({
      ok: false,
      error: { code: grpc.status.RESOURCE_EXHAUSTED, details: 'Rate limit exceeded (policy "LimitedController.clientStream")' },
    });

    for (let i = 0; i < 2; i++) expect(await bidi(client, ['p', 'q'])).toEqual({ ok: true, value: [{ id: 'p', n: 1 }, { id: 'q', n: 2 }] });
    expect(await bidi(client, ['p', 'q'])).toMatchObject({
      ok: false,
      error: { code: grpc.status.RESOURCE_EXHAUSTED, details: 'Rate limit exceeded (policy "LimitedController.bidi")' },
    });

    expect(runs).toMatchObject({ serverStream: 2, clientStream: 2, bidi: 2 });
  });

  it('@ConcurrencyLimit(2) on a server stream: a third is refused while two are open; cancelling one gives its slot back', async () => {
    const a = await watch(client, 'a');
    const b = await watch(client, 'b');
    expect([a.admitted, b.admitted]).toEqual([true, true]);
    const c = await watch(client, 'c');
    expect(c.admitted).toBe(false);
    expect(c.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(watching.has('c')).toBe(false);

    a.call.cancel();
    await until(() => !watching.has('a'), 'the server to tear the cancelled stream down');
    // the release is one more storage call after the teardown
    const d = await watchOnceFree(client, 'd', 'a third stream admitted once one was cancelled');
    expect([...watching.keys()].sort()).toEqual(['b', 'd']);
    b.call.cancel();
    d.call.cancel();
    await until(() => watching.size === 0, 'every stream torn down');
  });

  it('@ConcurrencyLimit(2): a stream cancelled before its first message gives its slot back at once, not after leaseMs', async () => {
    const quiet: grpc.ClientReadableStream<Res> = client.Watch({ id: 'quiet' });
    quiet.on('error', () => undefined); // its cancellation
    await until(() => watching.has('quiet'), 'the quiet stream admitted');
    const b = await watch(client, 'b');
    expect((await watch(client, 'c')).admitted).toBe(false);
    quiet.cancel();
    const c = await watchOnceFree(client, 'c', 'a stream admitted once the quiet one was cancelled');
    b.call.cancel();
    c.call.cancel();
    await until(() => watching.size === 0, 'every stream torn down');
  });

  it('@ConcurrencyLimit(1) on a bidirectional stream: held while the chat is open, back when the client ends its side or cancels', async () => {
    const first = await chat(client, 'a');
    expect(first.admitted).toBe(true);
    const refused = await chat(client, 'b');
    expect(refused).toMatchObject({ admitted: false, error: { code: grpc.status.RESOURCE_EXHAUSTED } });
    first.call.write({ id: 'a2' }); // still open, still echoing
    first.call.end();
    expect(await first.ended).toEqual({ ok: true, value: [{ id: 'a', n: 1 }, { id: 'a2', n: 2 }] });

    let second: Awaited<ReturnType<typeof chat>> | undefined;
    await until(async () => (second = await chat(client, 'c')).admitted, 'a chat admitted once the first ended');
    expect((await chat(client, 'd')).admitted).toBe(false);
    second!.call.cancel();
    await until(() => chats.open === 0, 'the cancelled chat torn down');
    await until(async () => {
      const next = await chat(client, 'e');
      next.call.end();
      return next.admitted;
    }, 'a chat admitted once the second was cancelled');
  });

  it('@ConcurrencyLimit(1) on a client stream: the slot is held while the client is still sending', async () => {
    const answer = new Promise<Outcome<Res>>((resolve) => {
      const call = client.Upload((error: grpc.ServiceError | null, value: Res) => resolve(error ? { ok: false, error } : { ok: true, value }));
      uploading.push(call);
      call.write({ id: 'part-1' });
    });
    await until(async () => {
      const outcome = await upload(client, ['x']);
      return !outcome.ok && outcome.error.code === grpc.status.RESOURCE_EXHAUSTED;
    }, 'a second upload refused while the first is open');
    uploading[0].write({ id: 'part-2' });
    uploading[0].end();
    expect(await answer).toEqual({ ok: true, value: { id: 'upload', n: 2 } });
    await until(async () => (await upload(client, ['y'])).ok, 'an upload admitted once the first ended');
  });

  it('@ConcurrencyLimit(2): a stream that ends by itself gives its slot back', async () => {
    const a = await watch(client, 'a');
    const b = await watch(client, 'b');
    expect((await watch(client, 'c')).admitted).toBe(false);
    const ended = readAll(a.call);
    watching.get('a')!.complete();
    expect((await ended).ok).toBe(true);
    const c = await watchOnceFree(client, 'c', 'a stream admitted once one ended');
    b.call.cancel();
    c.call.cancel();
    await until(() => watching.size === 0, 'every stream torn down');
  });
});

describe('gRPC with the storage down', () => {
  let outage: ControllableRedis;
  let app: INestMicroservice;
  let client: LimitedClient;
  beforeAll(async () => {
    outage = await startPrivateRedis();
    let port = 0;
    app = await onFreePort((free) => startService({ storage: { type: 'redis', url: outage.url }, storageTimeout: 50 }, (port = free)));
    client = loadClient(port);
    jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined); // the outage warnings
  });
  afterAll(async () => {
    client?.close();
    await app?.close();
    await outage?.stop();
    jest.restoreAllMocks();
  });

  it("under `deny`, a call the storage cannot decide ends with UNAVAILABLE and a retry-after; under `allow` it runs", async () => {
    expect((await unary(client, 'Guarded', 'up')).ok).toBe(true);
    await outage.kill();
    const refused = await unary(client, 'Guarded', 'down');
    expect(refused).toMatchObject({ ok: false, error: { code: grpc.status.UNAVAILABLE, details: 'Rate limiting is temporarily unavailable' } });
    expect(Number((refused as { error: grpc.ServiceError }).error.metadata.get('retry-after')[0])).toBeGreaterThanOrEqual(1);
    expect(runs.guarded).toBe(1);
    // the module's default policy, allow: the unary method runs through the outage
    expect((await unary(client, 'Unary', 'down')).ok).toBe(true);
  });
});
