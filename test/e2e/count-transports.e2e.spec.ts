import 'reflect-metadata';
import { Controller, type INestApplication, type INestMicroservice } from '@nestjs/common';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { Args, GraphQLModule, Query, Resolver } from '@nestjs/graphql';
import { ClientProxyFactory, MessagePattern, Payload, Transport, type ClientProxy, type MicroserviceOptions } from '@nestjs/microservices';
import { MessageBody, SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import { Test } from '@nestjs/testing';
import type { AddressInfo, Server as NetServer } from 'node:net';
import { firstValueFrom } from 'rxjs';
import { RateLimit, RateLimitModule, RateLimitService, type RateLimitStorage } from '../../lib/index.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { storageKinds } from '../support/scenario-app.js';
import type { StorageTarget } from '../support/storage-targets.js';
import { connectWs, createWsApp, WS_PLATFORMS } from '../support/ws-client.js';
import { exact } from '../support/exact.js';

/**
 * `count: 'failures'` beyond HTTP: there a call failed when its handler threw. Successful calls
 * get their units back when they end; failed ones keep them, until the limit refuses the next.
 */

const CLIENT = 'client:tester';
const LIMIT = { key: () => CLIENT, count: 'failures' as const, bucket: 'attempts' };
const RATE_LIMITED = { status: 'error', code: 'RATE_LIMITED', message: 'Rate limit exceeded' };

function attempt(input: string): string {
  if (input === 'wrong') throw new Error('wrong guess');
  return `ok:${input}`;
}

@Resolver()
class GuessResolver {
  @Query(() => String, { nullable: true })
  @RateLimit('2/minute', LIMIT)
  guess(@Args('input') input: string): string {
    return attempt(input);
  }
}

@WebSocketGateway()
class GuessGateway {
  @SubscribeMessage('guess')
  @RateLimit('2/minute', LIMIT)
  guess(@MessageBody() input: string) {
    return { event: 'guess', data: attempt(input) };
  }
}

@Controller()
class GuessMessages {
  @MessagePattern('guess')
  @RateLimit('2/minute', LIMIT)
  guess(@Payload() input: string) {
    return attempt(input);
  }
}

/** Waits until the client's budget shows `left`: a refund lands when the call has ended. */
async function budgetShows(service: RateLimitService, left: number): Promise<void> {
  const deadline = Date.now() + 2_000;
  for (;;) {
    const { remaining } = await service.peek(CLIENT, 'attempts');
    if (remaining === left) return;
    if (Date.now() > deadline) throw new Error(`the budget shows ${remaining}, not ${left}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

describe.each(storageKinds(() => redis))("count: 'failures' beyond HTTP, on $name storage", (target: StorageTarget) => {
  let storage: RateLimitStorage;
  beforeEach(async () => {
    await redis.flush();
    storage = target.create(new FakeClock());
  });
  afterEach(() => storage.close?.());

  it('GraphQL: successful queries give their units back; failed ones keep them', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [RateLimitModule.forRoot(exact({ storage })), GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true })],
      providers: [GuessResolver],
    }).compile();
    const app: INestApplication = moduleRef.createNestApplication({ logger: false });
    await app.listen(0, '127.0.0.1');
    try {
      const url = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}/graphql`;
      const guess = async (input: string): Promise<{ data?: unknown; errors?: { message: string; extensions: { code: string } }[] }> =>
        (await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: `{ guess(input: "${input}") }` }) })).json() as never;
      const service = app.get(RateLimitService);
      for (let i = 0; i < 4; i++) {
        expect(await guess('right')).toEqual({ data: { guess: 'ok:right' } });
        await budgetShows(service, 2);
      }
      for (let i = 0; i < 2; i++) expect((await guess('wrong')).errors?.[0].message).toBe('wrong guess');
      await budgetShows(service, 0);
      expect((await guess('right')).errors?.[0].extensions.code).toBe('RATE_LIMITED');
    } finally {
      await app.close();
    }
  });

  it.each(WS_PLATFORMS)('WebSockets (%s): successful messages give their units back; failed ones keep them', async (platform) => {
    const { app, port } = await createWsApp(platform, { imports: [RateLimitModule.forRoot(exact({ storage }))], providers: [GuessGateway] });
    const client = await connectWs(platform, port);
    try {
      const service = app.get(RateLimitService);
      for (let i = 0; i < 4; i++) {
        expect(await client.ask('guess', 'right')).toEqual({ event: 'guess', data: 'ok:right' });
        await budgetShows(service, 2);
      }
      for (let i = 0; i < 2; i++) expect((await client.ask('guess', 'wrong')).event).toBe('exception');
      await budgetShows(service, 0);
      expect(await client.ask('guess', 'right')).toEqual({ event: 'exception', data: expect.objectContaining(RATE_LIMITED) });
    } finally {
      await client.close();
      await app.close();
    }
  });

  it('RPC: successful messages give their units back; failed ones keep them', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [RateLimitModule.forRoot(exact({ storage }))], controllers: [GuessMessages] }).compile();
    const microservice: INestMicroservice = moduleRef.createNestMicroservice<MicroserviceOptions>({
      transport: Transport.TCP,
      options: { host: '127.0.0.1', port: 0 },
      logger: false,
    });
    await microservice.listen();
    const { port } = microservice.unwrap<NetServer>().address() as AddressInfo;
    const client: ClientProxy = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port } });
    await client.connect();
    try {
      const service = microservice.get(RateLimitService);
      const guess = (input: string) => firstValueFrom(client.send<string>('guess', input));
      for (let i = 0; i < 4; i++) {
        expect(await guess('right')).toBe('ok:right');
        await budgetShows(service, 2);
      }
      for (let i = 0; i < 2; i++) await expect(guess('wrong')).rejects.toMatchObject({ status: 'error' });
      await budgetShows(service, 0);
      await expect(guess('right')).rejects.toMatchObject(RATE_LIMITED);
    } finally {
      await client.close();
      await microservice.close();
    }
  });
});
