import 'reflect-metadata';
import { Controller, Injectable, UseGuards, type CanActivate, type ExecutionContext, type INestApplication, type INestMicroservice } from '@nestjs/common';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { Args, GraphQLModule, Query, Resolver } from '@nestjs/graphql';
import { ClientProxyFactory, MessagePattern, Payload, Transport, type ClientProxy, type MicroserviceOptions } from '@nestjs/microservices';
import { MessageBody, SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import { Test } from '@nestjs/testing';
import type { AddressInfo, Server as NetServer } from 'node:net';
import { firstValueFrom } from 'rxjs';
import { ConcurrencyLimit, RateLimit, RateLimitModule, type RateLimitOptions, type RateLimitStorage } from '../../lib/index.js';
import { RateLimitInterceptor } from '../../lib/interceptors/rate-limit.interceptor.js';
import { whenFinished } from '../../lib/outcomes/request-outcome.js';
import { FakeClock } from '../support/fake-clock.js';
import { InFlight } from '../support/in-flight.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';
import { connectWs, createWsApp, WS_PLATFORMS, type WsTestClient } from '../support/ws-client.js';
import { exact } from '../support/exact.js';

/**
 * `@ConcurrencyLimit` on GraphQL, WebSockets and RPC: the call beyond the limit is refused in the
 * shape each transport uses for refusals, and a slot comes back when a call ends.
 */

const flight = new InFlight();
const RATE_LIMITED = { status: 'error', code: 'RATE_LIMITED', message: 'Rate limit exceeded', retryAfter: 1 };

@Resolver()
class ReportResolver {
  @Query(() => String, { nullable: true })
  @ConcurrencyLimit(1)
  async report(@Args('id') id: string): Promise<string> {
    await flight.hold(id);
    return id;
  }
}

@WebSocketGateway()
class ReportGateway {
  @SubscribeMessage('report')
  @ConcurrencyLimit(1)
  async report(@MessageBody() id: string) {
    await flight.hold(id);
    return { event: 'report', data: id };
  }
}

/** How each RPC call ended, as `whenFinished` reports it: true for failed. */
const outcomes: boolean[] = [];

/** Registers for the outcome of every call, as the `count` option's guard does. */
@Injectable()
class OutcomeProbe implements CanActivate {
  canActivate(context: ExecutionContext) {
    whenFinished(context, (failed) => outcomes.push(failed));
    return true;
  }
}

@Controller()
class ReportMessages {
  @MessagePattern('report')
  @ConcurrencyLimit(1)
  @UseGuards(OutcomeProbe)
  async report(@Payload() id: string) {
    await flight.hold(id);
    if (id.startsWith('fail')) throw new Error(`report ${id} failed`);
    return id;
  }

  @MessagePattern('counted')
  @RateLimit('10/minute', { count: 'failures' } as RateLimitOptions) // only failures keep their units
  counted() {
    return 'ok';
  }

  @MessagePattern('plain')
  @RateLimit('10/minute')
  plain() {
    return 'ok';
  }
}

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

describe.each(storageKinds(() => redis))('@ConcurrencyLimit beyond HTTP, on $name storage', (target: StorageTarget) => {
  let storage: RateLimitStorage;
  beforeEach(async () => {
    await redis.flush();
    storage = target.create(new FakeClock());
  });
  afterEach(() => flight.clear());

  describe('GraphQL', () => {
    let app: INestApplication;
    let url: string;
    beforeEach(async () => {
      const moduleRef = await Test.createTestingModule({
        imports: [
          RateLimitModule.forRoot(exact({ storage })),
          GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true, graphiql: false }),
        ],
        providers: [ReportResolver],
      }).compile();
      app = moduleRef.createNestApplication({ logger: false });
      await app.listen(0, '127.0.0.1');
      url = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}/graphql`;
    });
    afterEach(async () => {
      flight.clear();
      await app.close();
    });

    const operation = (query: string) =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) });

    it('refuses the call beyond the limit in errors[] (RATE_LIMITED, retryAfter 1), with the headers, and gives the slot back when the call ends', async () => {
      const first = operation('{ report(id: "g1") }');
      await flight.arrived('g1');
      const denied = await operation('{ report(id: "g2") }');
      expect(denied.status).toBe(200);
      expect(denied.headers.get('ratelimit-policy')).toBe('"ReportResolver.report";q=1;qu="concurrent-requests"');
      expect(denied.headers.get('retry-after')).toBe('1');
      expect(await denied.json()).toEqual({
        data: { report: null },
        errors: [{ message: 'Rate limit exceeded', locations: [{ line: 1, column: 3 }], path: ['report'], extensions: { code: 'RATE_LIMITED', retryAfter: 1 } }],
      });

      flight.release('g1');
      expect(await (await first).json()).toEqual({ data: { report: 'g1' } });
      const next = operation('{ report(id: "g3") }');
      await flight.arrived('g3');
      flight.release('g3');
      expect(await (await next).json()).toEqual({ data: { report: 'g3' } });
    });

    it('counts the aliased calls of one operation, which run at once', async () => {
      const both = operation('{ a: report(id: "x1") b: report(id: "x2") }');
      await flight.arrived('x1');
      flight.release('x1');
      expect(await (await both).json()).toEqual({
        data: { a: 'x1', b: null },
        errors: [{ message: 'Rate limit exceeded', locations: [{ line: 1, column: 23 }], path: ['b'], extensions: { code: 'RATE_LIMITED', retryAfter: 1 } }],
      });
    });
  });

  describe.each(WS_PLATFORMS)('WebSockets on %s', (platform) => {
    let app: INestApplication;
    let client: WsTestClient;
    beforeEach(async () => {
      const created = await createWsApp(platform, { imports: [RateLimitModule.forRoot(exact({ storage }))], providers: [ReportGateway] });
      app = created.app;
      client = await connectWs(platform, created.port);
    });
    afterEach(async () => {
      flight.clear();
      await client.close();
      await app.close();
    });

    it("refuses the message beyond the limit with an 'exception' event, and gives the slot back when the handler returns", async () => {
      client.send('report', 'w1');
      await flight.arrived('w1');
      expect(await client.ask('report', 'w2')).toEqual({ event: 'exception', data: RATE_LIMITED });
      flight.release('w1');
      expect(await client.next()).toEqual({ event: 'report', data: 'w1' });
      client.send('report', 'w3');
      await flight.arrived('w3');
      flight.release('w3');
      expect(await client.next()).toEqual({ event: 'report', data: 'w3' });
      expect(client.open).toBe(true);
    });
  });

  describe('RPC (TCP microservice)', () => {
    let service: INestMicroservice;
    let client: ClientProxy;
    beforeEach(async () => {
      outcomes.length = 0;
      const moduleRef = await Test.createTestingModule({
        imports: [RateLimitModule.forRoot(exact({ storage }))],
        controllers: [ReportMessages],
        providers: [OutcomeProbe],
      }).compile();
      service = moduleRef.createNestMicroservice<MicroserviceOptions>({ transport: Transport.TCP, options: { host: '127.0.0.1', port: 0 }, logger: false });
      await service.listen();
      const { port } = service.unwrap<NetServer>().address() as AddressInfo;
      client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port } });
      await client.connect();
    });
    afterEach(async () => {
      flight.clear();
      await client.close();
      await service.close();
    });

    const send = (id: string) => firstValueFrom(client.send<string>('report', id));

    it('rejects send() beyond the limit with the RATE_LIMITED payload, and gives the slot back when the handler returns or throws', async () => {
      const first = send('r1');
      await flight.arrived('r1');
      await expect(send('r2')).rejects.toEqual(RATE_LIMITED);
      flight.release('r1');
      expect(await first).toBe('r1');

      const failing = send('fail-1');
      await flight.arrived('fail-1');
      flight.release('fail-1');
      await expect(failing).rejects.toEqual({ status: 'error', message: 'Internal server error' });

      const next = send('r3');
      await flight.arrived('r3');
      flight.release('r3');
      expect(await next).toBe('r3');
      // how each call ended, reported once each as it ended: r2 refused, r1 answered, fail-1 threw, r3 answered
      expect(outcomes).toEqual([true, false, true, false]);
    });

    it('binds the interceptor to a counting @RateLimit, and not to a plain one', () => {
      const interceptorsOf = (handler: Function): unknown[] | undefined => Reflect.getMetadata('__interceptors__', handler);
      expect(interceptorsOf(ReportMessages.prototype.counted)?.map((i) => i instanceof RateLimitInterceptor)).toEqual([true]);
      expect(interceptorsOf(ReportMessages.prototype.plain)).toBeUndefined();
    });
  });
});
