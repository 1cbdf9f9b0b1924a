/**
 * The MQTT transport on a real broker (MQTT_URL, default mqtt://127.0.0.1:1883, Mosquitto here),
 * speaking MQTT 5: the broker suite (test/support/broker-suite.ts), with a key read from the
 * message's MQTT 5 user properties.
 */
import 'reflect-metadata';
import type { INestMicroservice } from '@nestjs/common';
import { MqttRecordBuilder, Transport, type MqttContext } from '@nestjs/microservices';
import type { MqttClient } from 'mqtt';
import { brokerSuite, type BrokerTransport } from '../support/broker-suite.js';
import { describeWithBroker, probe, uniqueName } from '../support/brokers.js';
import { registerTestMetrics } from '../support/metrics-reader.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';

const mqtt = await probe('mqtt');

const MQTT: BrokerTransport = {
  label: 'MQTT',
  transport: Transport.MQTT,
  pattern: (what) => uniqueName(what, '/'),
  endpoint: async () => ({ server: { url: mqtt.url, protocolVersion: 5 }, client: { url: mqtt.url, protocolVersion: 5 } }),
  // listen() resolves on CONNACK, its SUBSCRIBEs unanswered: one more, answered, comes after them all
  subscribed: async (app: INestMicroservice) => {
    const client = app.unwrap<MqttClient>();
    const probeTopic = uniqueName('subscribed', '/');
    await client.subscribeAsync(probeTopic);
    await client.unsubscribeAsync(probeTopic);
  },
  // Nest's ServerMqtt.close() calls end() without waiting for it
  watchClose: (app: INestMicroservice) => {
    const client = app.unwrap<MqttClient>();
    const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
    return () => ended;
  },
  headerKey: {
    title: 'an MQTT 5 user property',
    record: (data, apiKey) => new MqttRecordBuilder(data).setProperties({ userProperties: { 'x-api-key': apiKey } }).build(),
    key: (context) => {
      const value = context.switchToRpc().getContext<MqttContext>().getPacket().properties?.userProperties?.['x-api-key'];
      return typeof value === 'string' && value !== '' ? value : undefined;
    },
  },
};

describeWithBroker(mqtt, 'brokers.mqtt.e2e', 'MQTT transport, real broker', () => {
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

  brokerSuite(MQTT, () => redis, () => telemetry);
});
