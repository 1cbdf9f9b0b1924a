/**
 * The message brokers the broker transport tests talk to (NATS, RabbitMQ, MQTT; the Redis
 * transport runs on the file's `startRedis()` server), whether each answers, and what the specs
 * share: a capturing logger, and unique names so that parallel runs and leftovers of earlier ones
 * never see each other's messages.
 *
 * Whether a broker answers is decided before any `describe` is declared (`await probe(...)` at the
 * top of the spec). A broker that does not answer:
 * - with REQUIRE_BROKERS=1 (CI), fails the suite with a test saying which broker and how to start it;
 * - otherwise, skips the suite, with one console warning saying what it needs.
 */
import { randomUUID } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { LoggerService } from '@nestjs/common';

export type BrokerName = 'nats' | 'rabbitmq' | 'mqtt' | 'redis';

export interface BrokerProbe {
  readonly name: BrokerName;
  /** As people call it: 'NATS', 'RabbitMQ'... */
  readonly label: string;
  /** The URL to connect to (credentials included when the env var has them). */
  readonly url: string;
  /** The URL as shown in messages: no credentials. */
  readonly shown: string;
  readonly available: boolean;
  /** Why it is not available. */
  readonly reason?: string;
  /** What to do when it is not. */
  readonly howToStart: string;
}

interface BrokerSpec {
  label: string;
  env: string;
  defaultUrl: string;
  defaultPort: number;
  howToStart: string;
  /** Bytes to send on connect (none: the server speaks first). */
  hello?: Buffer;
  /** Whether what the server answered so far is its protocol's greeting: true, false (it is not), or undefined (wait for more). */
  answered(received: Buffer): boolean | undefined;
}

/** An MQTT 3.1.1 CONNECT with a clean session and a random client id. */
function mqttConnect(): Buffer {
  const id = Buffer.from(`probe-${randomUUID().slice(0, 8)}`);
  const variable = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x0a]);
  const payload = Buffer.concat([Buffer.from([id.length >> 8, id.length & 0xff]), id]);
  const remaining = variable.length + payload.length; // < 128: one length byte
  return Buffer.concat([Buffer.from([0x10, remaining]), variable, payload]);
}

const SPECS: Record<BrokerName, BrokerSpec> = {
  nats: {
    label: 'NATS',
    env: 'NATS_URL',
    defaultUrl: 'nats://127.0.0.1:4222',
    defaultPort: 4222,
    howToStart: 'start it (nats-server -js &) or set NATS_URL',
    // the server greets first: INFO {...}\r\n
    answered: (received) => (received.length < 5 ? undefined : received.subarray(0, 5).toString() === 'INFO '),
  },
  rabbitmq: {
    label: 'RabbitMQ',
    env: 'AMQP_URL',
    defaultUrl: 'amqp://guest:guest@127.0.0.1:5672',
    defaultPort: 5672,
    howToStart: 'start it (rabbitmq-server -detached) or set AMQP_URL',
    hello: Buffer.from('AMQP\x00\x00\x09\x01', 'latin1'),
    // connection.start: a method frame (type 1) on channel 0, class 10 method 10
    answered: (received) =>
      received.length < 11 ? undefined : received[0] === 1 && received.readUInt16BE(1) === 0 && received.readUInt32BE(7) === 0x000a000a,
  },
  mqtt: {
    label: 'MQTT (Mosquitto)',
    env: 'MQTT_URL',
    defaultUrl: 'mqtt://127.0.0.1:1883',
    defaultPort: 1883,
    howToStart: 'start it (mosquitto -d) or set MQTT_URL',
    hello: mqttConnect(),
    // CONNACK, accepted
    answered: (received) => (received.length < 4 ? undefined : received[0] === 0x20 && received[3] === 0x00),
  },
  redis: {
    label: 'Redis',
    env: 'REDIS_URL',
    defaultUrl: 'redis://127.0.0.1:6379',
    defaultPort: 6379,
    howToStart: 'start it (redis-server --daemonize yes) or set REDIS_URL',
    hello: Buffer.from('PING\r\n'),
    // +PONG, or an error such as -NOAUTH: either way a Redis answered
    answered: (received) => (received.length < 1 ? undefined : received[0] === 0x2b || received[0] === 0x2d),
  },
};

function withoutCredentials(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`;
}

/** Connects, says hello, and resolves with why the broker did not answer as it should (undefined: it did). */
function knock(host: string, port: number, spec: BrokerSpec, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    let received = Buffer.alloc(0);
    let socket: Socket | undefined;
    const done = (reason: string | undefined) => {
      clearTimeout(timer);
      socket?.removeAllListeners();
      socket?.on('error', () => undefined);
      socket?.destroy();
      resolve(reason);
    };
    const timer = setTimeout(() => done(`no answer within ${timeoutMs} ms`), timeoutMs);
    socket = connect({ host, port });
    socket.on('connect', () => spec.hello && socket!.write(spec.hello));
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      const answered = spec.answered(received);
      if (answered === true) done(undefined);
      else if (answered === false) done(`it answered, but not as a ${spec.label} server (${JSON.stringify(received.subarray(0, 16).toString('latin1'))})`);
    });
    socket.on('error', (error) => done(error.message));
    socket.on('close', () => done('the connection was closed before it answered'));
  });
}

/** Whether `name` answers at its URL (its env var, or the default), within `timeoutMs`. */
export async function probe(name: BrokerName, timeoutMs = 1_500): Promise<BrokerProbe> {
  const spec = SPECS[name];
  const url = process.env[spec.env] || spec.defaultUrl;
  const parsed = new URL(url);
  const reason = await knock(parsed.hostname.replace(/^\[|\]$/g, ''), Number(parsed.port || spec.defaultPort), spec, timeoutMs);
  return { name, label: spec.label, url, shown: withoutCredentials(parsed), available: reason === undefined, reason, howToStart: spec.howToStart };
}

/** REQUIRE_BROKERS=1: a broker that does not answer fails its suite instead of skipping it. */
export const brokersRequired = process.env.REQUIRE_BROKERS === '1';

function unavailable(broker: BrokerProbe, file: string): string {
  return `${file}: ${broker.label} at ${broker.shown} does not answer (${broker.reason}); ${broker.howToStart}.`;
}

/**
 * `describe(title, body)` when the broker answers. When it does not: with REQUIRE_BROKERS=1, a
 * suite whose one test fails saying so; otherwise `describe.skip`, and a console warning.
 */
export function describeWithBroker(broker: BrokerProbe, file: string, title: string, body: () => void): void {
  if (broker.available) {
    describe(title, body);
  } else if (brokersRequired) {
    describe(title, () => {
      it(`needs ${broker.label}`, () => {
        throw new Error(`${unavailable(broker, file)} REQUIRE_BROKERS=1 is set, so this fails rather than skips.`);
      });
    });
  } else {
    console.warn(`${unavailable(broker, file)} These tests were skipped (set REQUIRE_BROKERS=1 to fail instead).`);
    describe.skip(title, body);
  }
}

/**
 * A name no other run and no other test shares: queues, subjects, topics and channels are the
 * broker's, not this process's. Dots and dashes only, valid on every broker.
 */
export const RUN_ID = `${process.pid}-${randomUUID().slice(0, 8)}`;
let sequence = 0;
export function uniqueName(what: string, separator = '.'): string {
  return ['rl-test', RUN_ID, what, String(++sequence)].join(separator);
}

export interface LogEntry {
  level: 'log' | 'error' | 'warn' | 'debug' | 'verbose' | 'fatal';
  message: string;
  /** The logger's context (a Nest Logger's, e.g. 'RateLimitGuard'), when it gave one. */
  context?: string;
  params: unknown[];
}

/**
 * A LoggerService that records every entry: give it as the app's `logger`, which makes it Nest's
 * logger process-wide (`Logger.overrideLogger`), so both `new Logger(ctx)` and static calls reach it.
 */
export class CapturingLogger implements LoggerService {
  readonly entries: LogEntry[] = [];
  private record(level: LogEntry['level'], message: unknown, params: unknown[]): void {
    const text = message instanceof Error ? message.message : typeof message === 'string' ? message : JSON.stringify(message);
    const last = params[params.length - 1];
    this.entries.push({ level, message: text, context: typeof last === 'string' ? last : undefined, params });
  }
  log(message: unknown, ...params: unknown[]) { this.record('log', message, params); }
  error(message: unknown, ...params: unknown[]) { this.record('error', message, params); }
  warn(message: unknown, ...params: unknown[]) { this.record('warn', message, params); }
  debug(message: unknown, ...params: unknown[]) { this.record('debug', message, params); }
  verbose(message: unknown, ...params: unknown[]) { this.record('verbose', message, params); }
  fatal(message: unknown, ...params: unknown[]) { this.record('fatal', message, params); }

  /** Entries of `level` whose message contains `text`. */
  find(level: LogEntry['level'], text: string): LogEntry[] {
    return this.entries.filter((entry) => entry.level === level && entry.message.includes(text));
  }
}

/** The refusal a denied `client.send()` rejects with. */
export const RATE_LIMITED = (retryAfter: number | null, message = 'Rate limit exceeded') => ({ status: 'error', code: 'RATE_LIMITED', message, retryAfter });

/** The rejection of a promise (fails if it resolves). */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  let value: unknown;
  try {
    value = await promise;
  } catch (error) {
    return error;
  }
  throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
}
