/**
 * What every broker transport (NATS, RabbitMQ, MQTT, Redis) must do, written once: a real Nest
 * microservice on the real broker, a real ClientProxy, on memory and Redis storage. Each spec file
 * (test/e2e/brokers.*.e2e.spec.ts) runs it with its transport's options, and adds what only its
 * broker does (RabbitMQ's acknowledgements).
 *
 * Every test builds its own controller classes with patterns of their own (brokers.ts
 * uniqueName): a server still closing from the previous test, or another run on the same broker,
 * never sees this test's messages.
 */
import 'reflect-metadata';
import { Controller, type ExecutionContext, type INestMicroservice, type Type } from '@nestjs/common';
import {
  ClientProxyFactory,
  EventPattern,
  MessagePattern,
  Payload,
  Transport,
  type ClientProxy,
  type MicroserviceOptions,
} from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { firstValueFrom, lastValueFrom } from 'rxjs';
import { MemoryStorage, RateLimit, RateLimitModule, type RateLimitModuleOptions } from '../../lib/index.js';
import { CapturingLogger, RATE_LIMITED, rejectionOf } from './brokers.js';
import { exact } from './exact.js';
import { FakeClock } from './fake-clock.js';
import { registerTestMetrics } from './metrics-reader.js';
import type { TestRedis } from './redis-server.js';
import { storageKinds } from './scenario-app.js';
import type { StorageTarget } from './storage-targets.js';
import { until } from './until.js';

/** One broker transport, as a spec file describes it to the suite. */
export interface BrokerTransport {
  /** 'NATS', 'RabbitMQ'... */
  readonly label: string;
  readonly transport: Transport.NATS | Transport.RMQ | Transport.MQTT | Transport.REDIS;
  /** A pattern (subject, routing pattern, topic, channel) no other test or run uses. */
  pattern(what: string): string;
  /** The server's and the clients' options for one app, with names of their own. */
  endpoint(): Promise<Endpoint>;
  /** Resolves once a listening server is subscribed to all its patterns (Nest's listen() does not wait for it on every broker). */
  subscribed?(app: INestMicroservice, endpoint: Endpoint): Promise<void>;
  /**
   * Called once the server listens; what it returns resolves once what app.close() starts but
   * does not await (MQTT's disconnect) has ended.
   */
  watchClose?(app: INestMicroservice): () => Promise<void>;
  /** A key carried in the transport's own headers, when it has them. */
  readonly headerKey?: HeaderKey;
}

export interface Endpoint {
  readonly server: Record<string, unknown>;
  readonly client: Record<string, unknown>;
  /** Deletes what the endpoint created on the broker (queues). */
  remove?(): Promise<void>;
}

export interface HeaderKey {
  /** What the headers are, for test titles: 'a NATS header'. */
  readonly title: string;
  /** The message data as a record that carries `apiKey` in the transport's headers. */
  record(data: object, apiKey: string): unknown;
  /** The key function reading it back, in the handler's context. */
  key(context: ExecutionContext): string | undefined;
}

/** Who ran, with what: a denied message must not add to it. */
export class Runs {
  readonly entries: { handler: string; data: unknown }[] = [];
  record(handler: string, data: unknown): void {
    this.entries.push({ handler, data });
  }
  count(handler: string, where: (data: any) => boolean = () => true): number {
    return this.entries.filter((entry) => entry.handler === handler && where(entry.data)).length;
  }
}

/** The sender, as the payload names it. */
export const accountOf = (context: ExecutionContext) => context.switchToRpc().getData<{ account?: string } | undefined>()?.account;

export const send = <T = unknown>(client: ClientProxy, pattern: string, data: unknown) => firstValueFrom(client.send<T>(pattern, data));
export const emit = (client: ClientProxy, pattern: string, data: unknown) => lastValueFrom(client.emit(pattern, data), { defaultValue: undefined });

/** A started (or not yet started) microservice on the broker, its clients, and their cleanup. */
export class BrokerApp {
  private readonly clients: ClientProxy[] = [];
  private closing?: () => Promise<void>;
  private stopping?: Promise<void>;
  private constructor(
    readonly broker: BrokerTransport,
    readonly app: INestMicroservice,
    readonly endpoint: Endpoint,
  ) {}

  /** Builds the app; `listen()` starts it. */
  static async create(
    broker: BrokerTransport,
    controllers: Type[],
    options: RateLimitModuleOptions,
    logger: CapturingLogger,
    endpoint?: Endpoint,
  ): Promise<BrokerApp> {
    const at = endpoint ?? (await broker.endpoint());
    const moduleRef = await Test.createTestingModule({ imports: [RateLimitModule.forRoot(exact(options))], controllers }).compile();
    const app = moduleRef.createNestMicroservice<MicroserviceOptions>({
      transport: broker.transport,
      options: at.server,
      logger,
    } as MicroserviceOptions);
    return new BrokerApp(broker, app, at);
  }

  static async start(...args: Parameters<typeof BrokerApp.create>): Promise<BrokerApp> {
    const served = await BrokerApp.create(...args);
    await served.listen();
    return served;
  }

  async listen(): Promise<void> {
    await this.app.listen();
    await this.broker.subscribed?.(this.app, this.endpoint);
    this.closing = this.broker.watchClose?.(this.app);
  }

  /** A connected ClientProxy to the app. */
  async client(overrides: Record<string, unknown> = {}): Promise<ClientProxy> {
    const client = ClientProxyFactory.create({ transport: this.broker.transport, options: { ...this.endpoint.client, ...overrides } } as never) as unknown as ClientProxy;
    this.clients.push(client);
    await client.connect();
    return client;
  }

  /** Closes the clients, then the app (and its storage); once. */
  async stop(): Promise<void> {
    this.stopping ??= (async () => {
      const failures = await settleAll([...this.clients.splice(0).map((client) => () => client.close()), () => this.app.close()]);
      if (this.closing) failures.push(...(await settleAll([this.closing])));
      if (failures.length > 0) throw failures[0];
    })();
    return this.stopping;
  }

  /** stop(), then deletes what the endpoint left on the broker. */
  async close(): Promise<void> {
    const failures = await settleAll([() => this.stop(), ...(this.endpoint.remove ? [this.endpoint.remove] : [])]);
    if (failures.length > 0) throw failures[0];
  }
}

/** Runs every step in order, whatever fails; returns the failures. */
async function settleAll(steps: (() => unknown)[]): Promise<unknown[]> {
  const failures: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (error) {
      failures.push(error);
    }
  }
  return failures;
}

/** The handlers every broker is tested with, under patterns of their own. */
function quotesController(broker: BrokerTransport, runs: Runs) {
  const patterns = { quote: broker.pattern('quote'), headed: broker.pattern('headed'), tick: broker.pattern('tick'), other: broker.pattern('other') };
  const headerKey = broker.headerKey?.key ?? (() => undefined);

  @Controller()
  class QuotesController {
    @MessagePattern(patterns.quote)
    @RateLimit('2/minute', { key: accountOf })
    quote(@Payload() data: { account: string; symbol: string }) {
      runs.record('quote', data);
      return { symbol: data.symbol, price: 42 };
    }

    @MessagePattern(patterns.headed)
    @RateLimit('2/minute', { key: headerKey })
    headed(@Payload() data: { n: number }) {
      runs.record('headed', data);
      return { ok: data.n };
    }

    @EventPattern(patterns.tick)
    @RateLimit('2/minute', { key: accountOf })
    tick(@Payload() data: any) {
      runs.record('tick', data);
    }

    /** Not limited: a marker that the events sent before it have been delivered. */
    @EventPattern(patterns.other)
    other(@Payload() data: any) {
      runs.record('other', data);
    }
  }
  return { QuotesController, patterns };
}

/** Handlers without a key, for the start-up check. */
function unkeyedController(broker: BrokerTransport, runs: Runs) {
  const patterns = { unkeyed: broker.pattern('unkeyed'), unkeyedEvent: broker.pattern('unkeyed-event'), tcpOnly: broker.pattern('tcp-only') };

  @Controller()
  class StartupController {
    @MessagePattern(patterns.unkeyed)
    @RateLimit('2/minute')
    unkeyed(@Payload() data: { account?: string }) {
      runs.record('unkeyed', data);
      return 'ok';
    }
  }

  @Controller()
  class StartupEventsController {
    @EventPattern(patterns.unkeyedEvent)
    @RateLimit('2/minute')
    unkeyedEvent(@Payload() data: any) {
      runs.record('unkeyedEvent', data);
    }
  }

  @Controller()
  class TcpOnlyController {
    /** Bound to TCP, which has client addresses: no other transport's server serves it. */
    @MessagePattern(patterns.tcpOnly, Transport.TCP)
    @RateLimit('2/minute')
    tcpOnly() {
      runs.record('tcpOnly', undefined);
      return 'ok';
    }
  }
  return { StartupController, StartupEventsController, TcpOnlyController, patterns };
}

/**
 * Declares the shared tests: request/reply refusals with keys from the payload and the headers,
 * refused events dropped (counted and logged once per handler), and the start-up check.
 * `redis` is the spec file's keyspace (storageKinds), started in its beforeAll.
 */
export function brokerSuite(broker: BrokerTransport, redis: () => TestRedis, telemetry: () => ReturnType<typeof registerTestMetrics>): void {
  const denied = (action: string, policy: string) =>
    telemetry().value('ratelimit.events.denied', { 'ratelimit.event.action': action, 'ratelimit.policy': policy });

  describe.each(storageKinds(redis))('on $name storage', (target: StorageTarget) => {
    let served: BrokerApp | undefined;
    let logs: CapturingLogger;
    let runs: Runs;
    let clock: FakeClock;

    beforeEach(async () => {
      await redis().flush();
      logs = new CapturingLogger();
      runs = new Runs();
      clock = new FakeClock();
    });
    afterEach(async () => {
      await served?.close();
      served = undefined;
    });

    async function serveQuotes(options: RateLimitModuleOptions = {}) {
      const { QuotesController, patterns } = quotesController(broker, runs);
      served = await BrokerApp.start(broker, [QuotesController], { ...options, storage: target.create(clock) }, logs);
      return { client: await served.client(), patterns };
    }

    it(`@MessagePattern keyed by the payload: the 3rd send() rejects with the RATE_LIMITED payload, the handler ran twice, another key has its own budget`, async () => {
      const { client, patterns } = await serveQuotes();
      const quote = (account: string) => send(client, patterns.quote, { account, symbol: 'ACME' });
      expect(await quote('alice')).toEqual({ symbol: 'ACME', price: 42 });
      expect(await quote('alice')).toEqual({ symbol: 'ACME', price: 42 });
      expect(await rejectionOf(quote('alice'))).toEqual(RATE_LIMITED(60));
      expect(await rejectionOf(quote('alice'))).toEqual(RATE_LIMITED(60));
      expect(runs.count('quote', (data) => data.account === 'alice')).toBe(2);
      // another sender, a budget of its own
      expect(await quote('bob')).toEqual({ symbol: 'ACME', price: 42 });
      expect(await quote('bob')).toEqual({ symbol: 'ACME', price: 42 });
      expect(await rejectionOf(quote('bob'))).toEqual(RATE_LIMITED(60));
      expect(runs.count('quote')).toBe(4);
      // the window's end frees the budget
      clock.advance(60_000);
      expect(await quote('alice')).toEqual({ symbol: 'ACME', price: 42 });
      expect(logs.entries.filter((entry) => entry.level === 'error')).toEqual([]); // a denial is an answer, not an error
    });

    if (broker.headerKey) {
      const headerKey = broker.headerKey;
      it(`@MessagePattern keyed by ${headerKey.title}: separate keys get separate budgets`, async () => {
        const { client, patterns } = await serveQuotes();
        const headed = (apiKey: string, n: number) => send(client, patterns.headed, headerKey.record({ n }, apiKey));
        expect(await headed('key-1', 1)).toEqual({ ok: 1 });
        expect(await headed('key-1', 2)).toEqual({ ok: 2 });
        expect(await rejectionOf(headed('key-1', 3))).toEqual(RATE_LIMITED(60));
        expect(await headed('key-2', 4)).toEqual({ ok: 4 });
        expect(await headed('key-2', 5)).toEqual({ ok: 5 });
        expect(await rejectionOf(headed('key-2', 6))).toEqual(RATE_LIMITED(60));
        expect(runs.entries.filter((entry) => entry.handler === 'headed').map((entry) => entry.data)).toEqual([{ n: 1 }, { n: 2 }, { n: 4 }, { n: 5 }]);
      });
    }

    it('@EventPattern: a denied event is dropped (its handler does not run), counted as dropped, and warned about once per handler', async () => {
      const { client, patterns } = await serveQuotes();
      const policy = 'QuotesController.tick';
      const before = await denied('dropped', policy);
      for (let n = 1; n <= 5; n++) await emit(client, patterns.tick, { account: 'alice', n });
      await emit(client, patterns.tick, { account: 'bob', n: 6 });
      await until(async () => (await denied('dropped', policy)) - before >= 3 && runs.count('tick') >= 3, 'two of alice\'s events handled, three denied, and bob\'s handled');
      // a marker sent after them all: once it has run, nothing else is on its way
      await emit(client, patterns.other, { marker: true });
      await until(() => runs.count('other') === 1, 'the marker event');
      expect(runs.count('tick', (data) => data.account === 'alice')).toBe(2);
      expect(runs.count('tick', (data) => data.account === 'bob')).toBe(1);
      expect((await denied('dropped', policy)) - before).toBe(3);
      const points = (await telemetry().points('ratelimit.events.denied')).filter((point) => point.attributes['ratelimit.policy'] === policy);
      expect(points.map((point) => point.attributes['ratelimit.event.action'])).toEqual(['dropped']);
      // three refused events, one warning naming the handler
      const warnings = logs.find('warn', policy);
      expect(warnings).toHaveLength(1);
      expect(warnings[0].message).toContain('dropped');
      expect(logs.entries.filter((entry) => entry.level === 'error')).toEqual([]);
    });
  });

  describe('start-up', () => {
    let served: BrokerApp | undefined;
    let logs: CapturingLogger;
    let runs: Runs;
    beforeEach(() => {
      logs = new CapturingLogger();
      runs = new Runs();
    });
    afterEach(async () => {
      await served?.close();
      served = undefined;
    });

    it(`a limited @MessagePattern with no key makes listen() reject, naming the handler and asking for a key`, async () => {
      const { StartupController } = unkeyedController(broker, runs);
      served = await BrokerApp.create(broker, [StartupController], {}, logs);
      const error = await rejectionOf(served.listen());
      expect(error).toBeInstanceOf(Error);
      expect((error as Error).message).toContain('StartupController.unkeyed');
      expect((error as Error).message).toContain('`key`');
    });

    it('a limited @EventPattern with no key makes listen() reject too', async () => {
      const { StartupEventsController } = unkeyedController(broker, runs);
      served = await BrokerApp.create(broker, [StartupEventsController], {}, logs);
      const error = await rejectionOf(served.listen());
      expect((error as Error).message).toContain('StartupEventsController.unkeyedEvent');
      expect((error as Error).message).toContain('`key`');
    });

    it('a module-level key is enough: it starts, and limits by that key', async () => {
      const { StartupController, patterns } = unkeyedController(broker, runs);
      // a clock that stands still: on the real one, a window could end between the second and third message
      served = await BrokerApp.start(broker, [StartupController], { key: accountOf, storage: new MemoryStorage({ clock: new FakeClock().now }) }, logs);
      const client = await served.client();
      expect(await send(client, patterns.unkeyed, { account: 'carol' })).toBe('ok');
      expect(await send(client, patterns.unkeyed, { account: 'carol' })).toBe('ok');
      expect(await rejectionOf(send(client, patterns.unkeyed, { account: 'carol' }))).toEqual({ ...RATE_LIMITED(1), retryAfter: expect.any(Number) });
      expect(await send(client, patterns.unkeyed, { account: 'dave' })).toBe('ok');
      expect(runs.count('unkeyed')).toBe(3);
    });

    it(`a keyless handler bound to Transport.TCP is not checked against the ${broker.label} server`, async () => {
      const { TcpOnlyController } = unkeyedController(broker, runs);
      served = await BrokerApp.start(broker, [TcpOnlyController], {}, logs);
      expect(logs.entries.filter((entry) => entry.level === 'error')).toEqual([]);
    });
  });
}
