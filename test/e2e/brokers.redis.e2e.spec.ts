/**
 * The Redis transport (pub/sub) on the file's Redis (`startRedis()`: a private redis-server, or
 * REDIS_URL's server; the storage's keyspace is one database of it, the transport's channels are
 * server-wide and named per run): the broker suite (test/support/broker-suite.ts). Redis
 * messages carry no headers, so keys come from the payload.
 *
 * And the start-up check's other side: TCP, whose messages carry the client's address, starts
 * with a keyless limit; a hybrid app with a Redis microservice connected does not.
 */
import 'reflect-metadata';
import type { AddressInfo, Server as NetServer } from 'node:net';
import { Controller, type INestApplication, type INestMicroservice } from '@nestjs/common';
import { ClientProxyFactory, MessagePattern, Payload, Transport, type ClientProxy, type MicroserviceOptions } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import type { Redis } from 'ioredis';
import { RateLimit, RateLimitModule } from '../../lib/index.js';
import { brokerSuite, send, Runs, type BrokerTransport } from '../support/broker-suite.js';
import { CapturingLogger, RATE_LIMITED, rejectionOf, uniqueName } from '../support/brokers.js';
import { exact } from '../support/exact.js';
import { registerTestMetrics } from '../support/metrics-reader.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';

let redis: TestRedis;
let telemetry: ReturnType<typeof registerTestMetrics>;
beforeAll(async () => {
  telemetry = registerTestMetrics(); // before any module starts: the library takes its meter then
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
  await telemetry?.stop();
});

/** Nest's Redis transport takes ioredis options, not a URL: the file's server, its database left to the storage. */
function transportOptions(): Record<string, unknown> {
  const url = new URL(redis.url);
  return {
    host: url.hostname,
    port: Number(url.port || 6379),
    ...(url.username && { username: decodeURIComponent(url.username) }),
    ...(url.password && { password: decodeURIComponent(url.password) }),
  };
}

const REDIS: BrokerTransport = {
  label: 'Redis',
  transport: Transport.REDIS,
  pattern: (what) => uniqueName(what),
  endpoint: async () => ({ server: transportOptions(), client: transportOptions() }),
  // listen() resolves with its SUBSCRIBEs sent, not answered: one more, answered, comes after them all
  subscribed: async (app: INestMicroservice) => {
    const [, subscriber] = app.unwrap<[Redis, Redis]>();
    const channel = uniqueName('subscribed');
    await subscriber.subscribe(channel);
    await subscriber.unsubscribe(channel);
  },
};

describe('Redis transport, real server', () => {
  brokerSuite(REDIS, () => redis, () => telemetry);
});

describe('start-up check, other transports', () => {
  const runs = new Runs();
  const patterns = { unkeyed: uniqueName('unkeyed'), redisOnly: uniqueName('redis-only') };

  @Controller()
  class AddressedController {
    @MessagePattern(patterns.unkeyed)
    @RateLimit('2/minute')
    unkeyed(@Payload() data: unknown) {
      runs.record('unkeyed', data);
      return 'ok';
    }
  }

  @Controller()
  class RedisOnlyController {
    /** Bound to the Redis transport: a TCP server does not serve it, so does not check it. */
    @MessagePattern(patterns.redisOnly, Transport.REDIS)
    @RateLimit('2/minute')
    redisOnly() {
      return 'ok';
    }
  }

  let logs: CapturingLogger;
  let closing: (() => Promise<unknown>)[] = [];
  beforeEach(() => {
    logs = new CapturingLogger();
  });
  afterEach(async () => {
    for (const close of closing.reverse()) await close();
    closing = [];
  });

  async function tcpService(controllers: Parameters<typeof Test.createTestingModule>[0]['controllers']) {
    const moduleRef = await Test.createTestingModule({ imports: [RateLimitModule.forRoot(exact({}))], controllers }).compile();
    const app = moduleRef.createNestMicroservice<MicroserviceOptions>({ transport: Transport.TCP, options: { host: '127.0.0.1', port: 0 }, logger: logs });
    closing.push(() => app.close());
    await app.listen();
    return (app.unwrap<NetServer>().address() as AddressInfo).port;
  }

  it('TCP: a keyless limited handler starts, and counts against the client address', async () => {
    const port = await tcpService([AddressedController]);
    const client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port } }) as unknown as ClientProxy;
    closing.push(() => client.close());
    expect(await send(client, patterns.unkeyed, {})).toBe('ok');
    expect(await send(client, patterns.unkeyed, {})).toBe('ok');
    expect(await rejectionOf(send(client, patterns.unkeyed, {}))).toEqual({ ...RATE_LIMITED(1), retryAfter: expect.any(Number) });
    expect(runs.count('unkeyed')).toBe(2);
  });

  it('TCP: a keyless handler bound to Transport.REDIS is not checked against the TCP server', async () => {
    await tcpService([RedisOnlyController]);
    expect(logs.entries.filter((entry) => entry.level === 'error')).toEqual([]);
  });

  it('a hybrid app with a Redis microservice connected does not start with a keyless limited handler', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [RateLimitModule.forRoot(exact({}))], controllers: [AddressedController] }).compile();
    const app: INestApplication = moduleRef.createNestApplication({ logger: logs });
    closing.push(() => app.close());
    app.connectMicroservice<MicroserviceOptions>({ transport: Transport.REDIS, options: transportOptions() });
    const error = await rejectionOf((async () => {
      await app.startAllMicroservices();
      await app.init();
    })());
    expect((error as Error).message).toContain('AddressedController.unkeyed');
    expect((error as Error).message).toContain('`key`');
  });
});
