import 'reflect-metadata';
import { Controller, Sse, type INestApplication, type MessageEvent } from '@nestjs/common';
import type { IncomingHttpHeaders } from 'node:http';
import { get } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Subject, type Observable } from 'rxjs';
import { ConcurrencyLimit, RateLimit, type RateLimitStorage } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';
import { answeringLate } from '../support/late-storage.js';
import { until } from '../support/until.js';

/**
 * Server-sent events (`@Sse()`): a denial is a plain 429 with its rate-limit headers and
 * Retry-After, answered before any stream starts (no `text/event-stream`, no handler run); an
 * admitted stream carries the headers of its check; `@ConcurrencyLimit` holds a slot for as long
 * as the stream is open.
 */

/** The streams the handlers opened, in order: the test sends their events and completes them. */
const streams: Subject<MessageEvent>[] = [];

function stream(): Observable<MessageEvent> {
  const subject = new Subject<MessageEvent>();
  streams.push(subject);
  return subject;
}

@Controller()
class EventsController {
  @Sse('ticks')
  @RateLimit('2/minute')
  ticks(): Observable<MessageEvent> {
    return stream();
  }

  @Sse('feed')
  @ConcurrencyLimit(2, { leaseMs: 60 * 60_000 })
  feed(): Observable<MessageEvent> {
    return stream();
  }
}

interface EventStream {
  /** The status and headers, once the server sent them. */
  readonly head: Promise<{ status: number; headers: IncomingHttpHeaders }>;
  readonly received: string;
  /** The whole body, once the server ended the response. */
  readonly ended: Promise<string>;
  close(): void;
}

/** A GET on its own connection, read as it arrives; `close()` hangs up. */
function open(port: number, path: string): EventStream {
  const request = get({ host: '127.0.0.1', port, path, agent: false, headers: { accept: 'text/event-stream' } });
  let received = '';
  let ended!: (body: string) => void;
  const endedPromise = new Promise<string>((resolve) => (ended = resolve));
  const head = new Promise<{ status: number; headers: IncomingHttpHeaders }>((resolve, reject) => {
    request.on('response', (response) => {
      resolve({ status: response.statusCode!, headers: response.headers });
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (received += chunk));
      response.on('end', () => ended(received));
      response.on('error', () => undefined); // a hang-up the test caused
    });
    request.on('error', reject);
  });
  head.catch(() => undefined);
  return {
    head,
    get received() {
      return received;
    },
    ended: endedPromise,
    close: () => request.destroy(),
  };
}

/**
 * The stream opened since `streams` had `before` of them that Nest listens to. Not simply the
 * next one: the handler of a client that hung up may run too, and its stream is torn down.
 */
async function subscribedSince(before: number, path: string): Promise<Subject<MessageEvent>> {
  let subject: Subject<MessageEvent> | undefined;
  await until(() => (subject = streams.slice(before).find((stream) => stream.observed)) !== undefined, `the stream of ${path} subscribed`);
  return subject!;
}

/** Opens a stream the handler admitted and waits until Nest listens to it (a Subject keeps nothing sent before). */
async function admitted(port: number, path: string): Promise<{ events: EventStream; subject: Subject<MessageEvent> }> {
  const before = streams.length;
  const events = open(port, path);
  expect((await events.head).status).toBe(200);
  return { events, subject: await subscribedSince(before, path) };
}

/**
 * Opens streams of `path` until one is admitted: after a stream ends, its slot comes back once the
 * release the server sent is answered, which a test cannot await. Refused attempts run no handler.
 */
async function admittedOnceFree(port: number, path: string): Promise<{ events: EventStream; subject: Subject<MessageEvent> }> {
  let refusals = 0;
  for (;;) {
    const before = streams.length;
    const events = open(port, path);
    const { status } = await events.head;
    if (status === 200) return { events, subject: await subscribedSince(before, path) };
    expect(status).toBe(429);
    events.close();
    if (++refusals > 200) throw new Error(`${path} still refused after ${refusals} attempts`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

describe.each(HTTP_PLATFORMS)('@Sse() on %s', (platform) => {
  describe.each(storageKinds(() => redis))('with $name storage', (target: StorageTarget) => {
    let storage: RateLimitStorage;
    let clock: FakeClock;
    let app: INestApplication;
    let port: number;
    const opened: EventStream[] = [];
    const openTracked = (path: string) => {
      const events = open(port, path);
      opened.push(events);
      return events;
    };

    beforeEach(async () => {
      await redis.flush();
      streams.length = 0;
      clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20)); // 40 s before the minute ends
      storage = target.create(clock);
      app = await createScenarioApp([EventsController], { storage }, { platform, forceCloseConnections: true });
      await app.listen(0, '127.0.0.1');
      port = (app.getHttpServer().address() as AddressInfo).port;
    });
    afterEach(async () => {
      for (const events of opened.splice(0)) events.close();
      for (const subject of streams) subject.complete();
      await app.close();
      await storage.close?.();
    });

    it('@RateLimit: an admitted stream carries its rate-limit headers; a denied one is a 429 with Retry-After before any stream starts', async () => {
      for (const left of [1, 0]) {
        const events = openTracked('/ticks');
        const { status, headers } = await events.head;
        expect(status).toBe(200);
        expect(headers['content-type']).toContain('text/event-stream');
        expect(headers['ratelimit-policy']).toMatch(/;q=2;w=60$/);
        expect(headers['ratelimit']).toMatch(new RegExp(`;r=${left};t=40$`));
      }
      const denied = openTracked('/ticks');
      const { status, headers } = await denied.head;
      expect(status).toBe(429);
      expect(headers['content-type']).toContain('application/json');
      expect(headers['retry-after']).toBe('40');
      expect(headers['ratelimit']).toMatch(/;r=0;t=40$/);
      expect(JSON.parse(await denied.ended)).toEqual({ statusCode: 429, error: 'Too Many Requests', message: 'Rate limit exceeded', retryAfter: 40 });
      expect(streams).toHaveLength(2); // the denied handler never ran
    });

    it('@RateLimit: events flow on an admitted stream, and it ends when the server completes it', async () => {
      const { events, subject } = await admitted(port, '/ticks');
      opened.push(events);
      subject.next({ data: 'AAPL 191.20' });
      await until(() => events.received.includes('data: AAPL 191.20'), 'the first event');
      subject.complete();
      expect(await events.ended).toContain('data: AAPL 191.20');
    });

    it('@ConcurrencyLimit(2): a third stream is refused with a 429 while two are open; closing one gives its slot to the next', async () => {
      const first = await admitted(port, '/feed');
      const second = await admitted(port, '/feed');
      opened.push(first.events, second.events);
      first.subject.next({ data: 'still open' });
      await until(() => first.events.received.includes('data: still open'), 'an event on the first stream');

      const third = openTracked('/feed');
      const { status, headers } = await third.head;
      expect(status).toBe(429);
      expect(headers['retry-after']).toMatch(/^[1-9]\d*$/);
      expect(headers['content-type']).toContain('application/json');
      expect(streams).toHaveLength(2);

      first.events.close();
      await until(() => !first.subject.observed, 'the first stream torn down');
      const fourth = await admittedOnceFree(port, '/feed');
      opened.push(fourth.events);
      expect((await openTracked('/feed').head).status).toBe(429); // two open again: the second and the fourth
    });

    it('@ConcurrencyLimit(2): a storage that answers after Nest would start the stream still refuses with a plain 429', async () => {
      await app.close(); // and its storage: the late one is a new one
      storage = target.create(clock);
      app = await createScenarioApp([EventsController], { storage: answeringLate(storage, () => 20) }, { platform, forceCloseConnections: true });
      await app.listen(0, '127.0.0.1');
      port = (app.getHttpServer().address() as AddressInfo).port;
      opened.push((await admitted(port, '/feed')).events, (await admitted(port, '/feed')).events);
      const third = openTracked('/feed');
      const { status, headers } = await third.head;
      expect(status).toBe(429);
      expect(headers['content-type']).toContain('application/json');
      expect(JSON.parse(await third.ended)).toMatchObject({ statusCode: 429, message: 'Rate limit exceeded' });
      expect(streams).toHaveLength(2);
    });

    it('@ConcurrencyLimit(2): a client gone before its stream started gives back the slot taken for it', async () => {
      await app.close(); // and its storage: the late one is a new one
      storage = target.create(clock);
      app = await createScenarioApp([EventsController], { storage: answeringLate(storage, () => 20) }, { platform, forceCloseConnections: true });
      await app.listen(0, '127.0.0.1');
      port = (app.getHttpServer().address() as AddressInfo).port;
      const gone = open(port, '/feed');
      await new Promise((resolve) => setTimeout(resolve, 5)); // the request is in, its slot not yet answered
      gone.close();
      opened.push((await admittedOnceFree(port, '/feed')).events, (await admittedOnceFree(port, '/feed')).events);
      expect((await openTracked('/feed').head).status).toBe(429);
    });

    it('@ConcurrencyLimit(2): a stream the server completes gives its slot back', async () => {
      const first = await admitted(port, '/feed');
      const second = await admitted(port, '/feed');
      opened.push(first.events, second.events);
      first.subject.complete();
      await first.events.ended;
      const third = await admittedOnceFree(port, '/feed');
      opened.push(third.events);
      expect((await openTracked('/feed').head).status).toBe(429);
    });
  });
});
