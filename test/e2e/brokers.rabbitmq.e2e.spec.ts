/**
 * The RabbitMQ transport on a real broker (AMQP_URL, default amqp://guest:guest@127.0.0.1:5672):
 * the broker suite (test/support/broker-suite.ts) with Nest's default `noAck: true`, a key read
 * from the message's AMQP headers, and what manual acknowledgement (`noAck: false`) adds: a
 * refused event is nacked, to the queue's dead-letter exchange (`rmqDeniedEvents: 'dead-letter'`,
 * the default) or back onto the queue (`'requeue'`), never lost.
 *
 * Every queue and exchange has a name of its own, is not durable, expires a minute after its last
 * use (x-expires, for a run that crashed) and is deleted when its test ends.
 */
import 'reflect-metadata';
import { Controller } from '@nestjs/common';
import { Ctx, EventPattern, MessagePattern, Payload, RmqRecordBuilder, Transport, type RmqContext } from '@nestjs/microservices';
import amqplib, { type Channel, type ChannelModel, type GetMessage, type Message } from 'amqplib';
import { RateLimit, type RateLimitModuleOptions } from '../../lib/index.js';
import { accountOf, BrokerApp, brokerSuite, emit, Runs, send, type BrokerTransport, type Endpoint } from '../support/broker-suite.js';
import { CapturingLogger, describeWithBroker, probe, RATE_LIMITED, rejectionOf, uniqueName } from '../support/brokers.js';
import { FakeClock } from '../support/fake-clock.js';
import { registerTestMetrics } from '../support/metrics-reader.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';
import { until } from '../support/until.js';

const rabbit = await probe('rabbitmq');

/** Queues expire a minute after their last use: leftovers of a crashed run do not stay. */
const EXPIRES = { 'x-expires': 60_000 };

/** The file's own connection to the broker, to declare, inspect and delete queues. */
let admin: ChannelModel;
/** A channel for one operation: a failed one (checkQueue of a missing queue) closes its channel. */
async function withChannel<T>(use: (channel: Channel) => Promise<T>): Promise<T> {
  const channel = await admin.createChannel();
  try {
    return await use(channel);
  } finally {
    await channel.close().catch(() => undefined);
  }
}
const deleteQueues = (...queues: string[]) => withChannel(async (channel) => { for (const queue of queues) await channel.deleteQueue(queue); });

/** A queue of its own; `extra` adds to the server's options (noAck, queue arguments...). */
function endpoint(extra: { noAck?: boolean; arguments?: Record<string, unknown> } = {}): Endpoint {
  const queue = uniqueName('queue');
  return {
    server: {
      urls: [rabbit.url],
      queue,
      noAck: extra.noAck ?? true,
      queueOptions: { durable: false, arguments: { ...EXPIRES, ...extra.arguments } },
    },
    // the server declares the queue; a client declaring it too would have to repeat every argument
    client: { urls: [rabbit.url], queue, noAssert: true },
    remove: () => deleteQueues(queue),
  };
}

const RABBITMQ: BrokerTransport = {
  label: 'RabbitMQ',
  transport: Transport.RMQ,
  pattern: (what) => uniqueName(what),
  endpoint: async () => endpoint(),
  // listen() resolves with basic.consume sent, not answered: closing before its answer rejects it unhandled
  subscribed: (_app, at) =>
    until(async () => (await withChannel((channel) => channel.checkQueue(at.server.queue as string))).consumerCount > 0, 'the server consuming its queue'),
  headerKey: {
    title: 'an AMQP message header',
    record: (data, apiKey) => new RmqRecordBuilder(data).setOptions({ headers: { 'x-api-key': apiKey } }).build(),
    key: (context) => {
      const value = (context.switchToRpc().getContext<RmqContext>().getMessage() as Message).properties.headers?.['x-api-key'];
      return typeof value === 'string' && value !== '' ? value : undefined;
    },
  },
};

/** An event handler that acknowledges by hand, as `noAck: false` requires: 1 event per minute per account. */
function ackingController(runs: Runs) {
  const pattern = uniqueName('order');
  @Controller()
  class OrdersController {
    @EventPattern(pattern)
    @RateLimit('1/minute', { key: accountOf })
    placed(@Payload() data: any, @Ctx() rpc: unknown) {
      const context = rpc as RmqContext;
      const message = context.getMessage() as Message;
      runs.record('placed', { ...data, redelivered: message.fields.redelivered });
      context.getChannelRef().ack(message);
    }
  }
  return { OrdersController, pattern };
}

/** A request handler that acknowledges by hand: 1 quote per minute per account. */
function ackingQuotes(runs: Runs) {
  const pattern = uniqueName('quote');
  @Controller()
  class QuotesController {
    @MessagePattern(pattern)
    @RateLimit('1/minute', { key: accountOf })
    quote(@Payload() data: any, @Ctx() rpc: unknown) {
      const context = rpc as RmqContext;
      runs.record('quote', data);
      context.getChannelRef().ack(context.getMessage() as Message);
      return 'ok';
    }
  }
  return { QuotesController, pattern };
}

describeWithBroker(rabbit, 'brokers.rabbitmq.e2e', 'RabbitMQ transport, real broker', () => {
  let redis: TestRedis;
  let telemetry: ReturnType<typeof registerTestMetrics>;
  beforeAll(async () => {
    telemetry = registerTestMetrics(); // before any module starts: the library takes its meter then
    redis = await startRedis();
    admin = await amqplib.connect(rabbit.url);
  });
  afterAll(async () => {
    await admin?.close();
    await redis?.stop();
    await telemetry?.stop();
  });

  describe('noAck: true (Nest\'s default)', () => {
    brokerSuite(RABBITMQ, () => redis, () => telemetry);
  });

  describe('noAck: false: a refused event is nacked, not lost', () => {
    const denied = (action: string) =>
      telemetry.value('ratelimit.events.denied', { 'ratelimit.event.action': action, 'ratelimit.policy': 'OrdersController.placed' });

    describe.each(storageKinds(() => redis))('on $name storage', (target: StorageTarget) => {
      let served: BrokerApp | undefined;
      let runs: Runs;
      let logs: CapturingLogger;
      let clock: FakeClock;
      const cleanups: (() => Promise<void>)[] = [];
      beforeEach(async () => {
        await redis.flush();
        runs = new Runs();
        logs = new CapturingLogger();
        clock = new FakeClock();
      });
      afterEach(async () => {
        await served?.close();
        served = undefined;
        for (const cleanup of cleanups.splice(0)) await cleanup();
      });

      async function serveOrders(at: Endpoint, options: RateLimitModuleOptions = {}) {
        const { OrdersController, pattern } = ackingController(runs);
        served = await BrokerApp.start(RABBITMQ, [OrdersController], { ...options, storage: target.create(clock) }, logs, at);
        return { client: await served.client(), pattern, queue: at.server.queue as string };
      }

      /** What the queue holds, ready or not yet acknowledged: once the app is closed, unacknowledged messages are ready again. */
      const messagesIn = (queue: string) => withChannel(async (channel) => (await channel.checkQueue(queue)).messageCount);

      it("'dead-letter' (the default): the refused event is nacked without requeue, and the broker moves it to the dead-letter queue", async () => {
        // the dead-letter exchange and its queue, declared before the queue that names it
        const dlx = uniqueName('dlx');
        const dlq = uniqueName('dlq');
        await withChannel(async (channel) => {
          await channel.assertExchange(dlx, 'fanout', { durable: false, autoDelete: false });
          await channel.assertQueue(dlq, { durable: false, arguments: EXPIRES });
          await channel.bindQueue(dlq, dlx, '');
        });
        cleanups.push(() => withChannel(async (channel) => { await channel.deleteQueue(dlq); await channel.deleteExchange(dlx); }));

        const before = await denied('dead-lettered');
        const { client, pattern, queue } = await serveOrders(endpoint({ noAck: false, arguments: { 'x-dead-letter-exchange': dlx } }));
        await emit(client, pattern, { account: 'alice', n: 1 });
        await emit(client, pattern, { account: 'alice', n: 2 });
        await emit(client, pattern, { account: 'bob', n: 3 });

        // the refused one arrives in the dead-letter queue, as it was sent
        let deadLettered: GetMessage | false = false;
        await until(async () => (deadLettered = await withChannel((channel) => channel.get(dlq, { noAck: true }))) !== false, 'the refused event in the dead-letter queue');
        const letter = deadLettered as unknown as GetMessage;
        const body = JSON.parse(letter.content.toString());
        expect(body).toEqual({ pattern, data: { account: 'alice', n: expect.any(Number) } });
        const deaths = letter.properties.headers?.['x-death'] as { reason: string; queue: string; count: number }[];
        expect(deaths).toEqual([expect.objectContaining({ reason: 'rejected', queue, count: 1 })]);

        await until(() => runs.count('placed') === 2, "alice's other event and bob's handled");
        expect(runs.count('placed', (data) => data.account === 'alice')).toBe(1);
        expect(runs.entries.map((entry) => (entry.data as { n: number }).n).sort()).toEqual([1, 2, 3].filter((n) => n !== body.data.n));
        expect((await denied('dead-lettered')) - before).toBe(1);
        expect(await denied('dropped')).toBe(0);

        // nothing left behind: every delivery was either acknowledged or nacked
        await served!.stop();
        expect(await messagesIn(queue)).toBe(0);
        // not dropped, so no warning about dropping
        expect(logs.find('warn', 'OrdersController.placed')).toEqual([]);
      });

      it('a refused request is answered and acknowledged: nothing is left unacknowledged to come back', async () => {
        const { QuotesController, pattern } = ackingQuotes(runs);
        const at = endpoint({ noAck: false });
        served = await BrokerApp.start(RABBITMQ, [QuotesController], { storage: target.create(clock) }, logs, at);
        const client = await served.client();
        expect(await send(client, pattern, { account: 'alice' })).toBe('ok');
        expect(await rejectionOf(send(client, pattern, { account: 'alice' }))).toEqual(RATE_LIMITED(60));
        expect(runs.count('quote')).toBe(1);
        // closing the consumer puts what it left unacknowledged back on the queue
        await served.stop();
        expect(await messagesIn(at.server.queue as string)).toBe(0);
      });

      it("'requeue': the refused event goes back onto the queue, and is handled, redelivered, once the budget frees", async () => {
        const before = await denied('requeued');
        const deadLetteredBefore = await denied('dead-lettered');
        const { client, pattern, queue } = await serveOrders(endpoint({ noAck: false }), { rmqDeniedEvents: 'requeue' });
        await emit(client, pattern, { account: 'alice', n: 1 });
        await emit(client, pattern, { account: 'alice', n: 2 });
        await until(async () => runs.count('placed') === 1 && (await denied('requeued')) - before >= 1, 'one event handled and the other requeued');
        expect(runs.count('placed')).toBe(1);

        // the window ends: the event, redelivered again, gets in
        clock.advance(60_000);
        await until(() => runs.count('placed') === 2, 'the requeued event handled');
        const [first, second] = runs.entries.map((entry) => entry.data as { n: number; redelivered: boolean });
        expect([first.n, second.n].sort()).toEqual([1, 2]);
        expect(first.redelivered).toBe(false);
        expect(second.redelivered).toBe(true);
        expect(await denied('dead-lettered')).toBe(deadLetteredBefore);

        await served!.stop();
        expect(await messagesIn(queue)).toBe(0);
      });
    });
  });
});
