/**
 * Microservices (@nestjs/microservices) and context types no built-in adapter serves, end to end.
 *
 * - TCP: a real microservice on a loopback port and a ClientProxy. Each `@MessagePattern` message
 *   and each `@EventPattern` event is one check; `client.send()` rejects with the refusal payload.
 * - A custom transport strategy delivering messages with a `RedisContext`: Nest's contexts are
 *   'rpc' for every strategy, and such a transport has no client address.
 * - A transport of another context type, built as libraries build theirs, with Nest's
 *   ExternalContextCreator: refused without an adapter, served with one from `contextAdapters`.
 */
import 'reflect-metadata';
import type { AddressInfo, Server as NetServer } from 'node:net';
import { jest } from '@jest/globals';
import {
  Controller,
  Get,
  Injectable,
  Logger,
  SetMetadata,
  type ExecutionContext,
  type INestApplication,
  type INestApplicationContext,
  type INestMicroservice,
  type OnModuleInit,
  type Type,
} from '@nestjs/common';
import { DiscoveryModule, DiscoveryService, ExternalContextCreator, MetadataScanner, Reflector } from '@nestjs/core';
import {
  ClientProxyFactory,
  EventPattern,
  MessagePattern,
  Payload,
  RedisContext,
  Server,
  Transport,
  type ClientProxy,
  type CustomTransportStrategy,
  type MicroserviceOptions,
} from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { firstValueFrom, lastValueFrom } from 'rxjs';
import request from 'supertest';
import {
  RateLimit,
  RateLimitModule,
  SkipRateLimit,
  refusalPayload,
  type AlgorithmName,
  type RateLimitCheck,
  type RateLimitContextAdapter,
  type RateLimitModuleOptions,
  type RateLimitStorage,
} from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { startPrivateRedis, startRedis, type ControllableRedis, type TestRedis } from '../support/redis-server.js';
import { storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';
import { exact } from '../support/exact.js';

/** Handlers that ran, by name: a denied message must not add to it. */
const ran: string[] = [];
const runs = (name: string) => ran.filter((entry) => entry === name).length;

/** Every storage key the guard checked, in order: which identity a message was counted against. */
class RecordingStorage implements RateLimitStorage {
  readonly keys: string[] = [];
  /** Checks the storage has answered. */
  decided = 0;
  constructor(private readonly inner: RateLimitStorage) {}
  async check(checks: readonly RateLimitCheck[], cost: number) {
    for (const check of checks) this.keys.push(check.key);
    const result = await this.inner.check(checks, cost);
    this.decided++;
    return result;
  }
  init() {
    return this.inner.init?.();
  }
  close() {
    return this.inner.close?.();
  }
}

/** Errors logged through Nest's Logger, with the logger's context (RateLimitGuard, ExceptionsHandler...). */
interface LoggedError {
  context: string | undefined;
  message: string;
  detail: string;
}
function captureErrors(): LoggedError[] {
  const errors: LoggedError[] = [];
  jest.spyOn(Logger.prototype, 'error').mockImplementation(function (this: Logger, message: unknown, detail?: unknown) {
    const text = (value: unknown) => (value instanceof Error ? `${value.message}\n${value.stack}` : String(value));
    errors.push({ context: (this as unknown as { context?: string }).context, message: text(message), detail: text(detail) });
  });
  return errors;
}

const RATE_LIMITED = (retryAfter: number | null, message = 'Rate limit exceeded') => ({ status: 'error', code: 'RATE_LIMITED', message, retryAfter });
/** What a TCP client gets for any error but a rate-limit refusal: Nest's RPC answer to an unknown exception. */
const INTERNAL_ERROR = { status: 'error', message: 'Internal server error' };

const apiKeyOf = (context: ExecutionContext) => context.switchToRpc().getData<{ apiKey?: string } | undefined>()?.apiKey;

@Controller()
class QuotesController {
  @MessagePattern('quote')
  @RateLimit('2/minute')
  quote(@Payload() data: { symbol: string }) {
    ran.push('quote');
    return { symbol: data.symbol, price: 42 };
  }

  @MessagePattern('keyed')
  @RateLimit('2/minute', { key: apiKeyOf })
  keyed() {
    ran.push('keyed');
    return 'ok';
  }

  @MessagePattern('report')
  @RateLimit('10/minute', { cost: 4 })
  report() {
    ran.push('report');
    return 'ok';
  }

  @MessagePattern('export')
  @RateLimit('10/minute', { cost: (context) => context.switchToRpc().getData<{ rows: number }>().rows })
  export() {
    ran.push('export');
    return 'ok';
  }

  @MessagePattern('search-a')
  @RateLimit('3/minute', { bucket: 'search' })
  searchA() {
    ran.push('search');
    return 'a';
  }

  @MessagePattern('search-b')
  @RateLimit('3/minute', { bucket: 'search' })
  searchB() {
    ran.push('search');
    return 'b';
  }

  @EventPattern('tick')
  @RateLimit('2/minute')
  tick(@Payload() _data: unknown) {
    ran.push('tick');
  }
}

/** One 2/minute handler per algorithm. */
@Controller()
class AlgorithmsController {
  @MessagePattern('fixed-window') @RateLimit('2/minute', { algorithm: 'fixed-window' }) fixedWindow() { return ran.push('fixed-window'); }
  @MessagePattern('sliding-window-log') @RateLimit('2/minute', { algorithm: 'sliding-window-log' }) slidingLog() { return ran.push('sliding-window-log'); }
  @MessagePattern('sliding-window-counter') @RateLimit('2/minute', { algorithm: 'sliding-window-counter' }) slidingCounter() { return ran.push('sliding-window-counter'); }
  @MessagePattern('token-bucket') @RateLimit('2/minute', { algorithm: 'token-bucket' }) tokenBucket() { return ran.push('token-bucket'); }
  @MessagePattern('leaky-bucket') @RateLimit('2/minute', { algorithm: 'leaky-bucket' }) leakyBucket() { return ran.push('leaky-bucket'); }
  @MessagePattern('gcra') @RateLimit('2/minute', { algorithm: 'gcra' }) gcra() { return ran.push('gcra'); }
}

/** Under the module's defaultLimit: one undecorated handler, one with a limit of its own, one exempt. */
@Controller()
class DefaultLimitController {
  @MessagePattern('plain')
  plain() {
    ran.push('plain');
    return 'ok';
  }

  @MessagePattern('limited')
  @RateLimit('10/minute')
  limited() {
    ran.push('limited');
    return 'ok';
  }

  @MessagePattern('health')
  @SkipRateLimit()
  health() {
    ran.push('health');
    return 'ok';
  }
}

/** One budget for a quote, whether asked over HTTP or over the microservice. */
@Controller()
class HybridController {
  @Get('quote')
  @RateLimit('3/minute', { bucket: 'quotes' })
  httpQuote() {
    ran.push('http');
    return { price: 42 };
  }

  @MessagePattern('quote')
  @RateLimit('3/minute', { bucket: 'quotes' })
  rpcQuote() {
    ran.push('rpc');
    return { price: 42 };
  }
}

/** A TCP microservice (ephemeral loopback port, IPv4 and IPv6) and the means to talk to it. */
class TcpService {
  private readonly clients: ClientProxy[] = [];
  private constructor(
    readonly app: INestMicroservice,
    readonly port: number,
  ) {}

  static async start(controllers: Type[], options: RateLimitModuleOptions): Promise<TcpService> {
    const moduleRef = await Test.createTestingModule({ imports: [RateLimitModule.forRoot(exact(options))], controllers }).compile();
    // '::' takes both 127.0.0.1 (seen as ::ffff:127.0.0.1) and ::1: two client addresses on one machine
    const app = moduleRef.createNestMicroservice<MicroserviceOptions>({ transport: Transport.TCP, options: { host: '::', port: 0 }, logger: false });
    await app.listen();
    const port = (app.unwrap<NetServer>().address() as AddressInfo).port;
    return new TcpService(app, port);
  }

  /** A new connection from `host`'s loopback address. */
  async client(host: '127.0.0.1' | '::1' = '127.0.0.1'): Promise<ClientProxy> {
    const client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host, port: this.port } });
    this.clients.push(client);
    await client.connect();
    return client;
  }

  async close(): Promise<void> {
    for (const client of this.clients) await client.close();
    await this.app.close();
  }
}

const send = <T = unknown>(client: ClientProxy, pattern: string, data: unknown = {}) => firstValueFrom(client.send<T>(pattern, data));

/** Polls until `condition` holds (at most 5 s): for events, which get no reply to wait for. */
async function until(condition: () => boolean): Promise<void> {
  const deadline = performance.now() + 5_000;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** This file's Redis keyspace, for every `storageKinds` describe (the outage test starts its own server). */
let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

describe('microservices (TCP transport)', () => {

  describe.each(storageKinds(() => redis))('on $name storage', (target: StorageTarget) => {
    let clock: FakeClock;
    let storage: RecordingStorage;
    let service: TcpService | undefined;
    let errors: LoggedError[];

    async function serve(controllers: Type[], options: RateLimitModuleOptions = {}): Promise<TcpService> {
      storage = new RecordingStorage(target.create(clock));
      service = await TcpService.start(controllers, { ...options, storage });
      return service;
    }

    beforeEach(async () => {
      await redis.flush();
      clock = new FakeClock();
      ran.length = 0;
      errors = captureErrors();
    });
    afterEach(async () => {
      jest.restoreAllMocks();
      await service?.close(); // closes the storage too
      service = undefined;
    });

    it('answers the messages within the limit, then rejects send() with the RATE_LIMITED payload and does not run the handler', async () => {
      const client = await (await serve([QuotesController])).client();
      expect(await send(client, 'quote', { symbol: 'ACME' })).toEqual({ symbol: 'ACME', price: 42 });
      clock.advance(15_000);
      expect(await send(client, 'quote', { symbol: 'ACME' })).toEqual({ symbol: 'ACME', price: 42 });
      await expect(send(client, 'quote', { symbol: 'ACME' })).rejects.toEqual(RATE_LIMITED(45));
      await expect(send(client, 'quote', { symbol: 'ACME' })).rejects.toEqual(RATE_LIMITED(45));
      expect(runs('quote')).toBe(2);
      // the window ends 45 s later, and the budget with it
      clock.advance(44_000);
      await expect(send(client, 'quote', { symbol: 'ACME' })).rejects.toEqual(RATE_LIMITED(1));
      clock.advance(1_000);
      expect(await send(client, 'quote', { symbol: 'ACME' })).toEqual({ symbol: 'ACME', price: 42 });
      expect(runs('quote')).toBe(3);
      expect(errors).toEqual([]); // a denial is an answer, not an error
    });

    it("counts by default against the TCP client's address: connections from one address share a budget, another address has its own", async () => {
      const svc = await serve([QuotesController]);
      const first = await svc.client('127.0.0.1');
      const again = await svc.client('127.0.0.1'); // another connection, another source port
      const ipv6 = await svc.client('::1');
      await send(first, 'quote', { symbol: 'A' });
      await send(again, 'quote', { symbol: 'A' });
      await expect(send(first, 'quote', { symbol: 'A' })).rejects.toEqual(RATE_LIMITED(60));
      await expect(send(again, 'quote', { symbol: 'A' })).rejects.toEqual(RATE_LIMITED(60));
      expect(await send(ipv6, 'quote', { symbol: 'A' })).toEqual({ symbol: 'A', price: 42 });
      expect(runs('quote')).toBe(3);
      const identities = storage.keys.map((key) => /\{(.*)\}/.exec(key)?.[1]);
      // IPv4-mapped IPv6 counts as the IPv4 address; IPv6 by its /64
      expect(identities).toEqual(['ip:127.0.0.1', 'ip:127.0.0.1', 'ip:127.0.0.1', 'ip:127.0.0.1', 'ip:0:0:0:0::/64']);
    });

    it('counts against what a key function reads from the message, and against the address when it finds nothing', async () => {
      const svc = await serve([QuotesController]);
      const client = await svc.client();
      await send(client, 'keyed', { apiKey: 'key-1' });
      await send(client, 'keyed', { apiKey: 'key-1' });
      await expect(send(client, 'keyed', { apiKey: 'key-1' })).rejects.toEqual(RATE_LIMITED(60));
      // same connection, other keys: budgets of their own
      expect(await send(client, 'keyed', { apiKey: 'key-2' })).toBe('ok');
      expect(await send(client, 'keyed', {})).toBe('ok');
      expect(await send(client, 'keyed', {})).toBe('ok');
      await expect(send(client, 'keyed', {})).rejects.toEqual(RATE_LIMITED(60));
      expect(runs('keyed')).toBe(5);
      expect(storage.keys.map((key) => /\{(.*)\}/.exec(key)?.[1])).toEqual([
        'key-1', 'key-1', 'key-1', 'key-2', 'ip:127.0.0.1', 'ip:127.0.0.1', 'ip:127.0.0.1',
      ]);
    });

    it('charges a fixed or computed cost, refuses for good a cost above the capacity, and shares a named bucket', async () => {
      const client = await (await serve([QuotesController])).client();
      await send(client, 'report');
      await send(client, 'report'); // 8 of 10 used
      await expect(send(client, 'report')).rejects.toEqual(RATE_LIMITED(60));
      expect(runs('report')).toBe(2);

      expect(await send(client, 'export', { rows: 10 })).toBe('ok');
      await expect(send(client, 'export', { rows: 1 })).rejects.toEqual(RATE_LIMITED(60));
      clock.advance(60_000);
      // no wait can ever admit it: retryAfter null
      await expect(send(client, 'export', { rows: 11 })).rejects.toEqual(
        RATE_LIMITED(null, 'Rate limit exceeded: this request costs 11, more than the 10 that "QuotesController.export" can ever admit'),
      );
      expect(await send(client, 'export', { rows: 10 })).toBe('ok');
      expect(runs('export')).toBe(2);

      expect(await send(client, 'search-a')).toBe('a');
      expect(await send(client, 'search-b')).toBe('b');
      expect(await send(client, 'search-a')).toBe('a');
      await expect(send(client, 'search-b')).rejects.toEqual(RATE_LIMITED(60));
      await expect(send(client, 'search-a')).rejects.toEqual(RATE_LIMITED(60));
      expect(runs('search')).toBe(3);
    });

    it.each<[AlgorithmName, number]>([
      ['fixed-window', 60],
      ['sliding-window-log', 60],
      ['sliding-window-counter', 90], // the full previous window still weighs 2 until it is half gone
      ['token-bucket', 30],
      ['leaky-bucket', 30],
      ['gcra', 30],
    ])('%s: 2/minute admits two, then the next after exactly its retryAfter (%i s)', async (algorithm, retryAfter) => {
      const client = await (await serve([AlgorithmsController])).client();
      await send(client, algorithm);
      await send(client, algorithm);
      await expect(send(client, algorithm)).rejects.toEqual(RATE_LIMITED(retryAfter));
      clock.advance(retryAfter * 1_000 - 1);
      await expect(send(client, algorithm)).rejects.toEqual(RATE_LIMITED(1));
      clock.advance(1);
      await send(client, algorithm);
      expect(runs(algorithm)).toBe(3);
    });

    it('applies defaultLimit to every handler not exempted, across handlers, and never to a @SkipRateLimit() one', async () => {
      const client = await (await serve([DefaultLimitController], { defaultLimit: '3/minute' })).client();
      expect(await send(client, 'plain')).toBe('ok');
      expect(await send(client, 'limited')).toBe('ok');
      expect(await send(client, 'plain')).toBe('ok');
      // one budget of 3 per client across handlers: both are now refused
      await expect(send(client, 'plain')).rejects.toEqual(RATE_LIMITED(60));
      await expect(send(client, 'limited')).rejects.toEqual(RATE_LIMITED(60));
      for (let i = 0; i < 5; i++) expect(await send(client, 'health')).toBe('ok');
      expect([runs('plain'), runs('limited'), runs('health')]).toEqual([2, 1, 5]);
      expect(storage.keys.some((key) => key.includes('health'))).toBe(false);
    });

    it('counts each event as one check: a denied event is dropped, its handler does not run, and nothing is logged', async () => {
      const client = await (await serve([QuotesController])).client();
      for (let i = 0; i < 4; i++) await firstValueFrom(client.emit('tick', { i }), { defaultValue: undefined });
      await until(() => storage.decided === 4);
      // a handler the guard admitted runs within the same turn of promises; give it a few more
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(runs('tick')).toBe(2);
      expect(errors).toEqual([]);
    });

    /** An HTTP app with the TCP microservice connected to it, both serving HybridController. */
    async function serveHybrid(inheritAppConfig: boolean) {
      storage = new RecordingStorage(target.create(clock));
      const moduleRef = await Test.createTestingModule({ imports: [RateLimitModule.forRoot(exact({ storage }))], controllers: [HybridController] }).compile();
      const app = moduleRef.createNestApplication({ logger: false });
      const microservice = app.connectMicroservice<MicroserviceOptions>(
        { transport: Transport.TCP, options: { host: '127.0.0.1', port: 0 } },
        { inheritAppConfig },
      );
      await app.startAllMicroservices();
      await app.init();
      const port = (microservice.unwrap<NetServer>().address() as AddressInfo).port;
      const client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port } });
      hybrid = { app, client };
      return { http: request(app.getHttpServer()), client };
    }
    let hybrid: { app: INestApplication; client: ClientProxy } | undefined;
    afterEach(async () => {
      await hybrid?.client.close();
      await hybrid?.app.close();
      hybrid = undefined;
    });

    it('in a hybrid app connected with inheritAppConfig: true, limits the microservice too, one budget per address across HTTP and RPC', async () => {
      const { http, client } = await serveHybrid(true);
      await http.get('/quote').expect(200);
      expect(await send(client, 'quote')).toEqual({ price: 42 });
      expect(await send(client, 'quote')).toEqual({ price: 42 });
      await expect(send(client, 'quote')).rejects.toEqual(RATE_LIMITED(60));
      const denied = await http.get('/quote').expect(429);
      expect(denied.body).toEqual({ statusCode: 429, error: 'Too Many Requests', message: 'Rate limit exceeded', retryAfter: 60 });
      expect([runs('http'), runs('rpc')]).toEqual([1, 2]);
      expect(storage.keys).toHaveLength(5); // one check per message, though the guard runs twice (global and the handler's)
      expect(new Set(storage.keys.map((key) => /\{(.*)\}/.exec(key)?.[1]))).toEqual(new Set(['ip:127.0.0.1']));
    });

    it('in a hybrid app connected without inheritAppConfig, still limits the microservice: its handlers carry the guard and filter themselves', async () => {
      // Nest gives such a microservice none of the app's global guards or filters
      const { http, client } = await serveHybrid(false);
      for (let i = 0; i < 3; i++) expect(await send(client, 'quote')).toEqual({ price: 42 });
      await expect(send(client, 'quote')).rejects.toEqual(RATE_LIMITED(60));
      expect(runs('rpc')).toBe(3);
      expect(storage.keys).toHaveLength(4); // one check per message, not two
      // one budget per address across HTTP and RPC
      const denied = await http.get('/quote').expect(429);
      expect(denied.body).toEqual({ statusCode: 429, error: 'Too Many Requests', message: 'Rate limit exceeded', retryAfter: 60 });
      expect(runs('http')).toBe(0);
    });
  });
});

describe('microservices: failure policies while Redis is down', () => {
  @Controller()
  class PolicyController {
    @MessagePattern('allow') @RateLimit('2/minute', { onStorageError: 'allow' }) allow() { return ran.push('allow'); }
    @MessagePattern('deny') @RateLimit('2/minute', { onStorageError: 'deny' }) deny() { return ran.push('deny'); }
    @MessagePattern('memory') @RateLimit('2/minute', { onStorageError: 'memory' }) memory() { return ran.push('memory'); }
  }

  let outage: ControllableRedis; // a server of its own, to kill
  let service: TcpService;
  let client: ClientProxy;
  beforeAll(async () => {
    outage = await startPrivateRedis();
    service = await TcpService.start([PolicyController], { storage: { type: 'redis', url: outage.url }, storageTimeout: 50 });
    client = await service.client();
    ran.length = 0;
    jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined); // the outage warning
    await outage.kill();
  });
  afterAll(async () => {
    jest.restoreAllMocks();
    await service?.close();
    // Back up, and its own client reconnected (flush waits for it), before stop(): an ioredis client
    // closed while reconnecting keeps a 2 s timer, which holds Jest up.
    await outage?.restart();
    await outage?.flush();
    await outage?.stop();
  });

  it("'deny' rejects send() with the STORAGE_UNAVAILABLE payload, and the handler does not run", async () => {
    for (let i = 0; i < 3; i++) {
      await expect(send(client, 'deny')).rejects.toEqual({
        status: 'error',
        code: 'STORAGE_UNAVAILABLE',
        message: 'Rate limiting is temporarily unavailable',
        retryAfter: 1,
      });
    }
    expect(runs('deny')).toBe(0);
  });

  it("'allow' lets every message through, uncounted", async () => {
    for (let i = 0; i < 4; i++) await send(client, 'allow');
    expect(runs('allow')).toBe(4);
  });

  it("'memory' keeps the limit, counted in this process", async () => {
    await send(client, 'memory');
    await send(client, 'memory');
    // the fallback counts on the real clock: any retryAfter of the current minute
    await expect(send(client, 'memory')).rejects.toEqual({ ...RATE_LIMITED(0), retryAfter: expect.any(Number) });
    expect(runs('memory')).toBe(2);
  });
});

/**
 * A transport strategy of your own (CustomTransportStrategy) whose messages carry no client
 * address, as on Redis, NATS or Kafka. Nest builds its handlers' contexts as for every transport:
 * type 'rpc', so the rpc adapter serves them.
 */
class InProcessTransport extends Server implements CustomTransportStrategy {
  listen(callback: () => void) {
    callback();
  }
  close() {}
  on(): never {
    throw new Error('no events');
  }
  unwrap<T>(): T {
    return this as unknown as T;
  }
  /** Delivers one message as a Redis transport would, and resolves with the reply or rejects with the error. */
  async request(pattern: string, data: unknown): Promise<unknown> {
    const handler = this.getHandlerByPattern(pattern)!;
    return lastValueFrom(this.transformToObservable(await handler(data, new RedisContext([pattern]))));
  }
}

describe('microservices: a transport without client addresses', () => {
  @Controller()
  class LedgerController {
    /** No key: the default, the client address, does not exist here. */
    @MessagePattern('balance')
    @RateLimit('2/minute')
    balance() {
      ran.push('balance');
      return 100;
    }

    @MessagePattern('charge')
    @RateLimit('2/minute', { key: apiKeyOf })
    charge() {
      ran.push('charge');
      return 'charged';
    }
  }

  describe.each(storageKinds(() => redis))('on $name storage', (target: StorageTarget) => {
    let app: INestMicroservice;
    let transport: InProcessTransport;
    let errors: LoggedError[];
    beforeEach(async () => {
      await redis.flush();
      ran.length = 0;
      errors = captureErrors();
      const moduleRef = await Test.createTestingModule({
        imports: [RateLimitModule.forRoot(exact({ storage: target.create(new FakeClock()) }))],
        controllers: [LedgerController],
      }).compile();
      transport = new InProcessTransport();
      app = moduleRef.createNestMicroservice({ strategy: transport, logger: false });
      await app.listen();
    });
    afterEach(async () => {
      jest.restoreAllMocks();
      await app?.close();
    });

    it('fails every message of a limited handler that has no key, with a logged error naming it, and never runs it', async () => {
      for (let i = 0; i < 3; i++) await expect(transport.request('balance', {})).rejects.toEqual(INTERNAL_ERROR);
      expect(runs('balance')).toBe(0);
      const ours = errors.filter((error) => error.context === 'RateLimitGuard');
      expect(ours).toHaveLength(3);
      for (const error of ours) {
        expect(error.message).toBe('Rate limit key resolver failed on LedgerController.balance; the request was refused.');
        expect(error.detail).toContain(
          'this rpc transport gives no client address: give @RateLimit (or the module) a `key` that identifies the client',
        );
      }
      // Nest's RPC exception handler does not log the guard's exception a second time
      expect(errors).toHaveLength(3);
    });

    it('limits by a key read from the message, and fails a message the key function finds no identity in', async () => {
      expect(await transport.request('charge', { apiKey: 'k1' })).toBe('charged');
      expect(await transport.request('charge', { apiKey: 'k1' })).toBe('charged');
      await expect(transport.request('charge', { apiKey: 'k1' })).rejects.toEqual(RATE_LIMITED(60));
      expect(await transport.request('charge', { apiKey: 'k2' })).toBe('charged');
      // undefined falls back to the client address, which this transport lacks: refused, not unlimited
      for (let i = 0; i < 3; i++) await expect(transport.request('charge', {})).rejects.toEqual(INTERNAL_ERROR);
      expect(runs('charge')).toBe(3);
      expect(errors.filter((error) => error.context === 'RateLimitGuard')).toHaveLength(3);
    });
  });
});

/**
 * A transport whose handlers run in contexts of a type of its own, as libraries build them with
 * Nest's ExternalContextCreator (as @nestjs/graphql does for 'graphql'): methods under
 * `@OnCommand(name)` become commands that `CommandBus.execute` runs through Nest's guards and
 * filters in a `type` context, with the command as the only argument.
 */
interface Command {
  name: string;
  sender: string;
  payload: { amount?: number };
}
const COMMAND_HANDLER = 'test:command-handler';
const OnCommand = (name: string) => SetMetadata(COMMAND_HANDLER, name);
const COMMAND_CONTEXT_TYPE = 'COMMAND_CONTEXT_TYPE';

@Injectable()
class CommandBus implements OnModuleInit {
  private readonly handlers = new Map<string, (command: Command) => Promise<unknown>>();
  static contextType = 'command';
  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly reflector: Reflector,
    private readonly contexts: ExternalContextCreator,
  ) {}

  onModuleInit() {
    for (const { instance } of this.discovery.getProviders()) {
      if (!instance || typeof instance !== 'object') continue;
      const prototype = Object.getPrototypeOf(instance) as Record<string, (...args: unknown[]) => unknown>;
      for (const method of this.scanner.getAllMethodNames(prototype)) {
        const name = this.reflector.get<string | undefined>(COMMAND_HANDLER, prototype[method]);
        if (name === undefined) continue;
        const handler = this.contexts.create(instance, prototype[method], method, undefined, undefined, undefined, undefined, undefined, CommandBus.contextType);
        this.handlers.set(name, handler as (command: Command) => Promise<unknown>);
      }
    }
  }

  execute(name: string, sender: string, payload: Command['payload'] = {}): Promise<unknown> {
    return this.handlers.get(name)!({ name, sender, payload });
  }
}

@Injectable()
class WalletCommands {
  @OnCommand('withdraw')
  @RateLimit('2/minute')
  withdraw(command: Command) {
    ran.push('withdraw');
    return { ok: true, amount: command.payload.amount };
  }

  @OnCommand('deposit')
  deposit() {
    ran.push('deposit');
    return { ok: true };
  }

  @OnCommand('status')
  @SkipRateLimit()
  status() {
    ran.push('status');
    return { ok: true };
  }
}

async function startCommandApp(options: RateLimitModuleOptions): Promise<{ app: INestApplicationContext; bus: CommandBus }> {
  const moduleRef = await Test.createTestingModule({
    imports: [RateLimitModule.forRoot(exact(options)), DiscoveryModule],
    providers: [CommandBus, WalletCommands],
  }).compile();
  const app = await moduleRef.init();
  return { app, bus: app.get(CommandBus) };
}

describe('a context type no adapter serves', () => {
  let app: INestApplicationContext | undefined;
  let errors: LoggedError[];
  beforeEach(() => {
    ran.length = 0;
    errors = captureErrors();
    CommandBus.contextType = 'carrier-pigeon';
  });
  afterEach(async () => {
    jest.restoreAllMocks();
    await app?.close();
    app = undefined;
  });

  const refusal =
    "Rate limit on WalletCommands.withdraw cannot be enforced: no context adapter serves 'carrier-pigeon' contexts, so the call was refused. " +
    'Register one with the `contextAdapters` option of RateLimitModule, or exempt the handler with @SkipRateLimit().';

  it('refuses every call of a limited handler, logs one error naming it and saying what to do, and runs the others', async () => {
    let bus: CommandBus;
    ({ app, bus } = await startCommandApp({}));
    for (let i = 0; i < 3; i++) await expect(bus.execute('withdraw', 'alice', { amount: 5 })).rejects.toThrow(refusal);
    expect(runs('withdraw')).toBe(0);
    expect(errors).toEqual([{ context: 'RateLimitGuard', message: refusal, detail: 'undefined' }]);
    // not limited: nothing to enforce
    expect(await bus.execute('deposit', 'alice')).toEqual({ ok: true });
    expect(await bus.execute('status', 'alice')).toEqual({ ok: true });
    expect(errors).toHaveLength(1);
  });

  it('under a defaultLimit, refuses every handler but a @SkipRateLimit() one', async () => {
    let bus: CommandBus;
    ({ app, bus } = await startCommandApp({ defaultLimit: '100/minute' }));
    await expect(bus.execute('deposit', 'alice')).rejects.toThrow(refusal.replace('withdraw', 'deposit'));
    for (let i = 0; i < 3; i++) expect(await bus.execute('status', 'alice')).toEqual({ ok: true });
    expect([runs('deposit'), runs('status')]).toEqual([0, 3]);
    expect(errors.map((error) => error.message)).toEqual([refusal.replace('withdraw', 'deposit')]);
  });
});

describe('a context type served by an adapter registered through contextAdapters', () => {
  /** The adapter a transport's user writes: who sent a command, and how a refusal is answered. */
  const commandContext: RateLimitContextAdapter = {
    type: 'command',
    request: (context) => context.getArgByIndex<Command>(0),
    clientAddress: (context) => context.getArgByIndex<Command>(0).sender,
    // what the command's caller gets instead of the handler's result
    refuse: (refusal) => ({ ok: false, ...refusalPayload(refusal) }),
  };

  describe.each(storageKinds(() => redis))('on $name storage', (target: StorageTarget) => {
    let app: INestApplicationContext | undefined;
    let errors: LoggedError[];
    beforeEach(async () => {
      await redis.flush();
      ran.length = 0;
      errors = captureErrors();
      CommandBus.contextType = 'command';
    });
    afterEach(async () => {
      jest.restoreAllMocks();
      await app?.close();
      app = undefined;
    });

    it("limits each sender (the adapter's address) and answers a denial with the adapter's refuse()", async () => {
      let bus: CommandBus;
      ({ app, bus } = await startCommandApp({ storage: target.create(new FakeClock()), contextAdapters: [commandContext] }));
      expect(await bus.execute('withdraw', 'alice', { amount: 5 })).toEqual({ ok: true, amount: 5 });
      expect(await bus.execute('withdraw', 'alice', { amount: 5 })).toEqual({ ok: true, amount: 5 });
      expect(await bus.execute('withdraw', 'alice', { amount: 5 })).toEqual({ ok: false, ...RATE_LIMITED(60) });
      expect(await bus.execute('withdraw', 'bob', { amount: 5 })).toEqual({ ok: true, amount: 5 });
      expect(runs('withdraw')).toBe(3);
      expect(errors).toEqual([]);
    });
  });
});
