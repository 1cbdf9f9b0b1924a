/**
 * The NATS transport on a real nats-server (NATS_URL, default nats://127.0.0.1:4222): the broker
 * suite (test/support/broker-suite.ts), with a key read from a NATS message header.
 */
import 'reflect-metadata';
import type { INestMicroservice } from '@nestjs/common';
import { NatsRecordBuilder, Transport, type NatsContext } from '@nestjs/microservices';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { brokerSuite, type BrokerTransport } from '../support/broker-suite.js';
import { describeWithBroker, probe, uniqueName } from '../support/brokers.js';
import { registerTestMetrics } from '../support/metrics-reader.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';

const nats = await probe('nats');

const NATS: BrokerTransport = {
  label: 'NATS',
  transport: Transport.NATS,
  pattern: (what) => uniqueName(what),
  endpoint: async () => {
    const queue = uniqueName('queue');
    return { server: { servers: [nats.url], queue }, client: { servers: [nats.url] } };
  },
  // the server's SUBSCRIBEs are sent, not confirmed, when listen() resolves: a flush is their answer
  subscribed: (app: INestMicroservice) => app.unwrap<NatsConnection>().flush(),
  headerKey: {
    title: 'a NATS header',
    record: (data, apiKey) => {
      const carried = headers();
      carried.set('x-api-key', apiKey);
      return new NatsRecordBuilder(data).setHeaders(carried).build();
    },
    key: (context) => context.switchToRpc().getContext<NatsContext>().getHeaders()?.get('x-api-key') || undefined,
  },
};

describeWithBroker(nats, 'brokers.nats.e2e', 'NATS transport, real broker', () => {
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

  brokerSuite(NATS, () => redis, () => telemetry);
});
