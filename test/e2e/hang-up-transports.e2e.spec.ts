import 'reflect-metadata';
import {
  Controller,
  Get,
  Injectable,
  Param,
  Req,
  Sse,
  StreamableFile,
  UseGuards,
  type CanActivate,
  type ExecutionContext,
  type INestApplication,
  type INestMicroservice,
  type MessageEvent,
} from '@nestjs/common';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { Args, Context, GraphQLModule, Query, Resolver } from '@nestjs/graphql';
import { ClientProxyFactory, Ctx, MessagePattern, Payload, TcpContext, Transport, type ClientProxy, type MicroserviceOptions } from '@nestjs/microservices';
import { ConnectedSocket, MessageBody, SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import { Test } from '@nestjs/testing';
import { get as httpGet, request as httpRequest } from 'node:http';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { firstValueFrom, of, Subject, type Observable } from 'rxjs';
import { ConcurrencyLimit, RateLimit, RateLimitModule, RateLimitService, type RateLimitStorage } from '../../lib/index.js';
import { whenFinished } from '../../lib/outcomes/request-outcome.js';
import { FakeClock } from '../support/fake-clock.js';
import { InFlight, sendGet } from '../support/in-flight.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';
import { connectWs, createWsApp, WS_PLATFORMS, type WsTestClient } from '../support/ws-client.js';
import { until } from '../support/until.js';
import { exact } from '../support/exact.js';

/**
 * A request's work ends when its handler ends, not when its client hangs up, on every transport
 * and for streams: a `@ConcurrencyLimit` slot stays held while the handler still works for a
 * client that left, and comes back when the work ends; a success whose client left stays a
 * success for `count`. The HTTP version of these attacks is hang-up-attacks.e2e.spec.ts.
 * Handlers are held by promises the test releases; nothing sleeps. An `@Sse()` stream is the
 * work itself: it ends with its teardown, whether or not it has sent anything.
 * A client gone before its handler started gets no handler run, and counts as a failure.
 *
 * Every client here is the same one (a constant key), so a second connection competes with the
 * first for the same slot and budget. Ids starting with `probe` are answered at once: they ask
 * whether the slot is free (admitted) or held (refused), or use a unit.
 */
const SHARED = 'client:mallory';
const key = () => SHARED;
const flight = new InFlight();
const RATE_LIMITED = { status: 'error', code: 'RATE_LIMITED', message: 'Rate limit exceeded', retryAfter: 1 };
const RATE_LIMITED_BASE = { status: 'error', code: 'RATE_LIMITED', message: 'Rate limit exceeded' };

/** Ids whose handler ran to its end, in that order. */
const finished: string[] = [];
/** How each call of a probed route ended, as `whenFinished` reports it: true for failed. */
const outcomes: boolean[] = [];

const probe = (id: string) => id.startsWith('probe');

/** A held piece of work: the handler reports its arrival, waits for the test, then ends. */
async function work(id: string, closes: { once(event: 'close', listener: () => void): unknown }): Promise<string> {
  if (probe(id)) return id;
  flight.watchClose(id, closes);
  await flight.hold(id);
  finished.push(id);
  return id;
}

/**
 * A key resolver the test holds (`key-<id>`), watching the client: it may leave before the
 * handler starts.
 */
function slowKey(idOf: (context: ExecutionContext) => string, closesOf: (context: ExecutionContext) => { once(event: 'close', listener: () => void): unknown }) {
  return async (context: ExecutionContext) => {
    const id = idOf(context);
    flight.watchClose(id, closesOf(context));
    await flight.hold(`key-${id}`);
    return SHARED;
  };
}
const slowWsKey = slowKey(
  (context) => String(context.switchToWs().getData()),
  (context) => wsCloseOf(context.switchToWs().getClient()),
);
const slowGraphQLKey = slowKey(
  (context) => String((context.getArgs()[1] as { id: string }).id),
  (context) => (context.getArgs()[2] as { req: GraphQLRequest }).req.res,
);

/** A guard after the limiter's that refuses ids starting with `deny`: their handler never runs. */
@Injectable()
class RefuseDenied implements CanActivate {
  canActivate(context: ExecutionContext) {
    return !String(context.switchToWs().getData()).startsWith('deny');
  }
}

/** Registers for the outcome of every call, as the `count` option's guard does. */
@Injectable()
class OutcomeProbe implements CanActivate {
  canActivate(context: ExecutionContext) {
    whenFinished(context, (failed) => outcomes.push(failed));
    return true;
  }
}

/** What goes away when a WebSocket client leaves: a socket.io socket disconnects, a `ws` one closes. */
const wsCloseOf = (socket: unknown) => ({
  once: (_event: 'close', listener: () => void) => {
    const emitter = socket as { handshake?: unknown; once(event: string, listener: () => void): unknown };
    return emitter.once(emitter.handshake === undefined ? 'close' : 'disconnect', listener);
  },
});

@WebSocketGateway()
class HangUpGateway {
  @SubscribeMessage('export')
  @ConcurrencyLimit(1, { key })
  async export(@MessageBody() id: string, @ConnectedSocket() socket: unknown) {
    return { event: 'export', data: await work(id, wsCloseOf(socket)) };
  }

  @SubscribeMessage('signup')
  @RateLimit('2/minute', { key, count: 'successes' })
  @UseGuards(OutcomeProbe)
  async signup(@MessageBody() id: string, @ConnectedSocket() socket: unknown) {
    return { event: 'signup', data: await work(id, wsCloseOf(socket)) };
  }

  @SubscribeMessage('late')
  @RateLimit('2/minute', { key: slowWsKey, count: 'successes' })
  @UseGuards(OutcomeProbe)
  late(@MessageBody() id: string) {
    finished.push(id);
    return { event: 'late', data: id };
  }

  @SubscribeMessage('guarded')
  @RateLimit('5/minute', { key, count: 'successes' })
  @UseGuards(RefuseDenied)
  guarded(@MessageBody() id: string) {
    return { event: 'guarded', data: id };
  }

  @SubscribeMessage('guess')
  @RateLimit('2/minute', { key, count: 'failures' })
  @UseGuards(OutcomeProbe)
  async guess(@MessageBody() id: string, @ConnectedSocket() socket: unknown) {
    return { event: 'guess', data: await work(id, wsCloseOf(socket)) };
  }
}

/** The GraphQL context's HTTP request (Express under Apollo): its response closes when the client aborts. */
type GraphQLRequest = { res: { once(event: 'close', listener: () => void): unknown } };

@Resolver()
class HangUpResolver {
  @Query(() => String, { nullable: true })
  @ConcurrencyLimit(1, { key })
  export(@Args('id') id: string, @Context('req') request: GraphQLRequest): Promise<string> {
    return work(id, request.res);
  }

  @Query(() => String, { nullable: true })
  @RateLimit('2/minute', { key, count: 'successes' })
  @UseGuards(OutcomeProbe)
  signup(@Args('id') id: string, @Context('req') request: GraphQLRequest): Promise<string> {
    return work(id, request.res);
  }
}

@Resolver()
class LateResolver {
  @Query(() => String, { nullable: true })
  @RateLimit('2/minute', { key: slowGraphQLKey, count: 'successes' })
  @UseGuards(OutcomeProbe)
  late(@Args('id') id: string): string {
    finished.push(id);
    return id;
  }
}

@Controller()
class HangUpMessages {
  @MessagePattern('export')
  @ConcurrencyLimit(1, { key })
  export(@Payload() id: string, @Ctx() context: TcpContext): Promise<string> {
    return work(id, context.getSocketRef().netSocket);
  }

  @MessagePattern('signup')
  @RateLimit('2/minute', { key, count: 'successes' })
  @UseGuards(OutcomeProbe)
  signup(@Payload() id: string, @Ctx() context: TcpContext): Promise<string> {
    return work(id, context.getSocketRef().netSocket);
  }
}

/** The SSE streams and files of the test, by id: it decides what they send and when they end. */
const events = new Map<string, Subject<MessageEvent>>();
const files = new Map<string, PassThrough>();

/** The connection under an Express request or a Fastify one. */
type HttpRequest = { raw?: { socket: Socket }; socket?: Socket };
const socketOf = (request: HttpRequest): Socket => (request.raw ?? request).socket!;

/** The stream routes share their slots with `/probe`, which answers at once: 200 while a slot is free, 429 while it is held. */
const STREAMS = { key, bucket: 'streams' };

@Controller()
class StreamController {
  @Sse('events/:id')
  @ConcurrencyLimit(1, STREAMS)
  events(@Param('id') id: string, @Req() request: HttpRequest): Observable<MessageEvent> {
    const subject = new Subject<MessageEvent>();
    events.set(id, subject);
    flight.watchClose(id, socketOf(request));
    flight.arrive(id);
    return subject;
  }

  @Get('file/:id')
  @ConcurrencyLimit(1, STREAMS)
  file(@Param('id') id: string, @Req() request: HttpRequest): StreamableFile {
    const stream = new PassThrough();
    files.set(id, stream);
    flight.watchClose(id, socketOf(request));
    flight.arrive(id);
    return new StreamableFile(stream, { type: 'text/plain' });
  }

  @Get('probe')
  @ConcurrencyLimit(1, STREAMS)
  probe(): Observable<string> {
    return of('free');
  }
}

/** A GraphQL POST on its own connection, answered with its JSON body, or destroyed by `abort()`. */
function graphqlPost(port: number, query: string): { answer: Promise<unknown>; abort(): void } {
  const request = httpRequest({ host: '127.0.0.1', port, path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json' }, agent: false });
  const answer = new Promise<unknown>((resolve) => {
    request.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve(JSON.parse(body)));
      response.on('error', () => resolve('hung up'));
    });
    request.on('error', () => resolve('hung up'));
  });
  request.end(JSON.stringify({ query }));
  return { answer, abort: () => request.destroy() };
}

/** A GET of a stream on its own connection: what has come so far, how it ended, and `abort()`. */
function openStream(port: number, path: string): { readonly received: string; ended: Promise<{ status: number; body: string } | 'hung up'>; abort(): void } {
  const request = httpGet({ host: '127.0.0.1', port, path, agent: false });
  let received = '';
  const ended = new Promise<{ status: number; body: string } | 'hung up'>((resolve) => {
    request.on('response', (response) => {
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (received += chunk));
      response.on('end', () => resolve({ status: response.statusCode!, body: received }));
      response.on('error', () => resolve('hung up'));
      response.on('aborted', () => resolve('hung up'));
    });
    request.on('error', () => resolve('hung up'));
  });
  return {
    get received() {
      return received;
    },
    ended,
    abort: () => request.destroy(),
  };
}


let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

describe.each(storageKinds(() => redis))('clients that hang up beyond plain HTTP, on $name storage', (target: StorageTarget) => {
  let storage: RateLimitStorage;
  beforeEach(async () => {
    await redis.flush();
    finished.length = 0;
    outcomes.length = 0;
    events.clear();
    files.clear();
    storage = target.create(new FakeClock());
  });
  // the inner afterEach closed the app first
  afterEach(() => storage.close?.());

  describe.each(WS_PLATFORMS)('WebSockets on %s', (platform) => {
    let app: INestApplication;
    let port: number;
    const clients: WsTestClient[] = [];
    const connect = async () => {
      const client = await connectWs(platform, port);
      clients.push(client);
      return client;
    };
    beforeEach(async () => {
      ({ app, port } = await createWsApp(platform, { imports: [RateLimitModule.forRoot(exact({ storage }))], providers: [HangUpGateway, OutcomeProbe, RefuseDenied] }));
    });
    afterEach(async () => {
      flight.clear();
      for (const client of clients.splice(0)) await client.close();
      await app.close();
    });

    it('@ConcurrencyLimit(1): a client that disconnects mid-handler keeps the slot held until the handler ends; a second socket of the same client is refused meanwhile', async () => {
      const first = await connect();
      first.send('export', 'w1');
      await flight.arrived('w1');
      await first.close();
      await flight.closed('w1'); // the server saw it go, while the handler still works

      const second = await connect();
      expect(await second.ask('export', 'probe-1')).toEqual({ event: 'exception', data: RATE_LIMITED });
      expect(finished).toEqual([]);

      flight.release('w1'); // the work ends: the slot comes back
      await until(async () => (await second.ask('export', 'probe-2')).event === 'export', 'the slot back');
      expect(finished).toEqual(['w1']);

      // one slot, not two: the released one is taken again, and the next is refused
      second.send('export', 'w2');
      await flight.arrived('w2');
      expect(await second.ask('export', 'probe-3')).toEqual({ event: 'exception', data: RATE_LIMITED });
      flight.release('w2');
      expect(await second.next()).toEqual({ event: 'export', data: 'w2' });
      expect(second.open).toBe(true);
    });

    it("count: 'successes': a message whose client disconnects mid-handler, and which then succeeds, keeps its unit", async () => {
      const first = await connect();
      first.send('signup', 's1');
      await flight.arrived('s1');
      await first.close();
      await flight.closed('s1');
      expect(outcomes).toEqual([]); // the disconnect ended nothing

      flight.release('s1');
      await until(() => outcomes.length > 0, 'the outcome');
      expect(outcomes).toEqual([false]); // a success, though nobody read it
      expect(finished).toEqual(['s1']);
      const service = app.get(RateLimitService);
      expect((await service.peek(SHARED, 'HangUpGateway.signup')).remaining).toBe(1);

      // so only one more fits in the 2/minute
      const second = await connect();
      expect(await second.ask('signup', 'probe-1')).toEqual({ event: 'signup', data: 'probe-1' });
      expect(await second.ask('signup', 'probe-2')).toEqual({ event: 'exception', data: expect.objectContaining(RATE_LIMITED_BASE) });
    });

    it("count: 'successes': a client that disconnects before its handler starts gets no handler run, and its unit back", async () => {
      const first = await connect();
      first.send('late', 'l1');
      await flight.arrived('key-l1'); // the guard is resolving its key
      await first.close();
      await flight.closed('l1');
      flight.release('key-l1');
      await until(() => outcomes.length > 0, 'the outcome');
      expect(outcomes).toEqual([true]); // nothing was done: a failure
      expect(finished).toEqual([]);
      const service = app.get(RateLimitService);
      await until(async () => (await service.peek(SHARED, 'HangUpGateway.late')).remaining === 2, 'the unit back');
    });

    it("count: 'successes': messages a later guard refuses did nothing; their units come back when their client goes", async () => {
      const first = await connect();
      expect(await first.ask('guarded', 'ok-1')).toEqual({ event: 'guarded', data: 'ok-1' });
      for (const id of ['deny-1', 'deny-2']) expect((await first.ask('guarded', id)).event).toBe('exception');
      const service = app.get(RateLimitService);
      expect((await service.peek(SHARED, 'HangUpGateway.guarded')).remaining).toBe(2); // nothing tells them apart yet
      await first.close();
      await until(async () => (await service.peek(SHARED, 'HangUpGateway.guarded')).remaining === 4, 'their units back');
    });

    it("count: 'failures': a message whose client disconnects mid-handler, and which then succeeds, gets its unit back", async () => {
      const first = await connect();
      first.send('guess', 'f1');
      await flight.arrived('f1');
      await first.close();
      await flight.closed('f1');
      const service = app.get(RateLimitService);
      expect(outcomes).toEqual([]);
      expect((await service.peek(SHARED, 'HangUpGateway.guess')).remaining).toBe(1); // taken at admission, kept while it works

      flight.release('f1');
      await until(() => outcomes.length > 0, 'the outcome');
      expect(outcomes).toEqual([false]);
      await until(async () => (await service.peek(SHARED, 'HangUpGateway.guess')).remaining === 2, 'the unit back');
    });
  });

  describe('GraphQL', () => {
    let app: INestApplication;
    let port: number;
    beforeEach(async () => {
      const moduleRef = await Test.createTestingModule({
        imports: [
          RateLimitModule.forRoot(exact({ storage })),
          GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true, graphiql: false }),
        ],
        providers: [HangUpResolver, LateResolver, OutcomeProbe],
      }).compile();
      app = moduleRef.createNestApplication({ logger: false, forceCloseConnections: true });
      await app.listen(0, '127.0.0.1');
      port = (app.getHttpServer().address() as AddressInfo).port;
    });
    afterEach(async () => {
      flight.clear();
      await app.close();
    });

    const operation = (query: string) => graphqlPost(port, query).answer;
    const refusedField = (field: string) => ({
      data: { [field]: null },
      errors: [expect.objectContaining({ message: 'Rate limit exceeded', extensions: expect.objectContaining({ code: 'RATE_LIMITED' }) })],
    });

    it('@ConcurrencyLimit(1): a query whose HTTP request is aborted mid-resolver holds its slot until the resolver ends', async () => {
      const first = graphqlPost(port, '{ export(id: "g1") }');
      await flight.arrived('g1');
      first.abort();
      expect(await first.answer).toBe('hung up');
      await flight.closed('g1'); // the server saw it go, while the resolver still works

      expect(await operation('{ export(id: "probe-1") }')).toEqual(refusedField('export'));
      expect(finished).toEqual([]);

      flight.release('g1');
      await until(async () => JSON.stringify(await operation('{ export(id: "probe-2") }')) === '{"data":{"export":"probe-2"}}', 'the slot back');
      expect(finished).toEqual(['g1']);
    });

    it("count: 'successes': a query aborted before its resolver starts gets no resolver run, and its unit back", async () => {
      const first = graphqlPost(port, '{ late(id: "l1") }');
      await flight.arrived('key-l1');
      first.abort();
      expect(await first.answer).toBe('hung up');
      await flight.closed('l1');
      flight.release('key-l1');
      await until(() => outcomes.length > 0, 'the outcome');
      expect(outcomes).toEqual([true]);
      expect(finished).toEqual([]);
      const service = app.get(RateLimitService);
      await until(async () => (await service.peek(SHARED, 'LateResolver.late')).remaining === 2, 'the unit back');
    });

    it("count: 'successes': a query aborted mid-resolver, whose resolver then succeeds, keeps its unit", async () => {
      const first = graphqlPost(port, '{ signup(id: "s1") }');
      await flight.arrived('s1');
      first.abort();
      expect(await first.answer).toBe('hung up');
      await flight.closed('s1');
      expect(outcomes).toEqual([]);

      flight.release('s1');
      await until(() => outcomes.length > 0, 'the outcome');
      expect(outcomes).toEqual([false]);
      expect(finished).toEqual(['s1']);
      expect((await app.get(RateLimitService).peek(SHARED, 'HangUpResolver.signup')).remaining).toBe(1);
      expect(await operation('{ signup(id: "probe-1") }')).toEqual({ data: { signup: 'probe-1' } });
      expect(await operation('{ signup(id: "probe-2") }')).toEqual(refusedField('signup'));
    });
  });

  describe('RPC (TCP microservice)', () => {
    let service: INestMicroservice;
    let port: number;
    const clients: ClientProxy[] = [];
    const connect = async () => {
      const client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port } });
      clients.push(client);
      await client.connect();
      return client;
    };
    const send = (client: ClientProxy, pattern: string, id: string) => firstValueFrom(client.send<string>(pattern, id));
    beforeEach(async () => {
      const moduleRef = await Test.createTestingModule({
        imports: [RateLimitModule.forRoot(exact({ storage }))],
        controllers: [HangUpMessages],
        providers: [OutcomeProbe],
      }).compile();
      service = moduleRef.createNestMicroservice<MicroserviceOptions>({ transport: Transport.TCP, options: { host: '127.0.0.1', port: 0 }, logger: false });
      await service.listen();
      ({ port } = service.unwrap<NetServer>().address() as AddressInfo);
    });
    afterEach(async () => {
      flight.clear();
      for (const client of clients.splice(0)) await client.close();
      await service.close();
    });

    it('@ConcurrencyLimit(1): a client that closes mid-handler leaves the slot held until the handler ends; a second client is refused meanwhile', async () => {
      const first = await connect();
      const unanswered = send(first, 'export', 'r1').catch(() => 'closed');
      await flight.arrived('r1');
      await first.close();
      await flight.closed('r1'); // the server saw the connection go, while the handler still works

      const second = await connect();
      await expect(send(second, 'export', 'probe-1')).rejects.toEqual(RATE_LIMITED);
      expect(finished).toEqual([]);

      flight.release('r1');
      await until(async () => (await send(second, 'export', 'probe-2').catch(() => 'refused')) === 'probe-2', 'the slot back');
      expect(finished).toEqual(['r1']);
      expect(await unanswered).toBe('closed'); // its client never heard back
    });

    it("count: 'successes': a message whose client closes mid-handler, and which then succeeds, keeps its unit", async () => {
      const first = await connect();
      void send(first, 'signup', 's1').catch(() => undefined);
      await flight.arrived('s1');
      await first.close();
      await flight.closed('s1');
      expect(outcomes).toEqual([]);

      flight.release('s1');
      await until(() => outcomes.length > 0, 'the outcome');
      expect(outcomes).toEqual([false]);
      expect((await service.get(RateLimitService).peek(SHARED, 'HangUpMessages.signup')).remaining).toBe(1);
      const second = await connect();
      expect(await send(second, 'signup', 'probe-1')).toBe('probe-1');
      await expect(send(second, 'signup', 'probe-2')).rejects.toMatchObject(RATE_LIMITED_BASE);
    });
  });

  describe.each(HTTP_PLATFORMS)('HTTP streams on %s', (platform) => {
    let app: INestApplication;
    let port: number;
    beforeEach(async () => {
      app = await createScenarioApp([StreamController], { storage }, { platform, forceCloseConnections: true });
      await app.listen(0, '127.0.0.1');
      port = (app.getHttpServer().address() as AddressInfo).port;
    });
    afterEach(async () => {
      flight.clear();
      for (const subject of events.values()) subject.complete();
      for (const stream of files.values()) stream.destroy();
      await app.close();
    });

    const probeStatus = async () => (await sendGet(port, '/probe').answer).status;
    const slotBack = () => until(async () => (await probeStatus()) === 200, 'the slot back');
    /** The SSE stream of `id` once Nest listens to it: a Subject keeps no event sent before. */
    const subscribed = async (id: string) => {
      await flight.arrived(id);
      const subject = events.get(id)!;
      await until(() => subject.observed, `the stream ${id} subscribed`);
      return subject;
    };

    it('@Sse(): the slot is held while the stream is open, and comes back when it completes', async () => {
      const stream = openStream(port, '/events/e1');
      await subscribed('e1');
      events.get('e1')!.next({ data: 'one' });
      await until(() => stream.received.includes('data: one'), 'the first event');
      expect(await probeStatus()).toBe(429);

      events.get('e1')!.next({ data: 'two' });
      await until(() => stream.received.includes('data: two'), 'the second event');
      expect(await probeStatus()).toBe(429);

      events.get('e1')!.complete();
      expect(await stream.ended).toEqual({ status: 200, body: expect.stringContaining('data: two') });
      await slotBack();
    });

    it('@Sse(): a client that hangs up tears the stream down, which frees the slot', async () => {
      const stream = openStream(port, '/events/e2');
      const subject = await subscribed('e2');
      subject.next({ data: 'one' });
      await until(() => stream.received.includes('data: one'), 'the first event');
      expect(await probeStatus()).toBe(429);

      stream.abort();
      expect(await stream.ended).toBe('hung up');
      await flight.closed('e2');
      await until(() => !subject.observed, 'the stream torn down');
      await slotBack();
    });

    it('@Sse(): a stream that has sent nothing yet when its client hangs up is torn down too: its slot comes back at once', async () => {
      const stream = openStream(port, '/events/e3');
      const subject = await subscribed('e3');
      expect(await probeStatus()).toBe(429);
      stream.abort();
      expect(await stream.ended).toBe('hung up');
      await flight.closed('e3');
      await until(() => !subject.observed, 'the stream torn down');
      await slotBack();
    });

    it('StreamableFile: the slot is held while the stream is being written, and comes back when it ends', async () => {
      const download = openStream(port, '/file/f1');
      await flight.arrived('f1');
      const file = files.get('f1')!;
      file.write('part one;');
      await until(() => download.received === 'part one;', 'the first part');
      expect(await probeStatus()).toBe(429);

      file.end('part two'); // and then null: the stream ends
      expect(await download.ended).toEqual({ status: 200, body: 'part one;part two' });
      await slotBack();
    });

    it('StreamableFile: a client that hangs up mid-download gets the stream destroyed, which frees the slot', async () => {
      const download = openStream(port, '/file/f2');
      await flight.arrived('f2');
      const file = files.get('f2')!;
      file.write('part one;');
      await until(() => download.received === 'part one;', 'the first part');
      expect(await probeStatus()).toBe(429);

      download.abort();
      expect(await download.ended).toBe('hung up');
      await until(() => file.destroyed, 'the stream destroyed');
      await slotBack();
    });
  });
});
