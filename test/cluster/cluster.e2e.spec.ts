import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import { RedisStorage } from '../../lib/index.js';
import { routeId } from '../../lib/rules/route-id.js';
import { AppModule } from '../../sample-app/app.module.js';
import { expectTooManyRequests, FREE_USER, PAID_USER, remaining } from '../support/assertions.js';
import { FakeClock } from '../support/fake-clock.js';
import { startCluster, type TestCluster } from '../support/redis-cluster.js';
import { adminCommand } from '../support/redis-nodes.js';
import { exact } from '../support/exact.js';

/** The sample app on Redis Cluster: a few behaviours of test/e2e/sample-app.e2e.spec.ts. */



const FREE = FREE_USER;
const PAID = PAID_USER;

let cluster: TestCluster;
let app: INestApplication;
let clock: FakeClock;
const http = () => request(app.getHttpServer());

beforeAll(async () => {
  cluster = await startCluster();
}, 60_000);
afterAll(() => cluster?.stop());

beforeEach(async () => {
  await cluster.flush();
  clock = new FakeClock(Date.UTC(2030, 0, 1, 9, 30, 20)); // 20 s into a minute
  // the client is the test's (closed by cluster.stop): RedisStorage never closes a given client
  const storage = new RedisStorage({ client: cluster.client(), clock: clock.now });
  const moduleRef = await Test.createTestingModule({ imports: [AppModule.register({ storage, storagePolicy: exact({}) })] }).compile();
  app = moduleRef.createNestApplication({ logger: false });
  await app.init();
});
afterEach(() => app?.close());

describe('sample app on Redis Cluster', () => {
  it('GET /items: 5 per minute, then 429 until the window ends; the counter lives on its slot\'s master', async () => {
    for (let i = 0; i < 5; i++) expect(remaining(await http().get('/items').expect(200))).toBe(4 - i);
    const denied = await http().get('/items');
    expectTooManyRequests(denied);
    expect(denied.headers['retry-after']).toBe('40');
    expect(denied.headers['ratelimit']).toBe('"ItemsController.findAll";r=0;t=40');

    clock.advance(39_999);
    expectTooManyRequests(await http().get('/items'));
    clock.advance(1);
    expect(remaining(await http().get('/items').expect(200))).toBe(4);

    const keys = (await Promise.all(cluster.masters().map((m) => adminCommand(m.port, ['KEYS', 'rl:*'])))).flat() as string[];
    expect(keys).toEqual([expect.stringMatching(new RegExp(`^rl:\\{ip:[^}]+\\}:${routeId('ItemsController.findAll')}:fw1m$`))]);
    expect(await adminCommand((await cluster.masterOf(keys[0])).port, ['EXISTS', keys[0]])).toBe(1);
  });

  it('GET /quotes: paid users get their own 1000/minute budget; free users share the IP budget', async () => {
    expect(remaining(await http().get('/quotes/AAPL').expect(200))).toBe(99);
    const paid = await http().get('/quotes/AAPL').set(PAID).expect(200);
    expect(paid.headers['ratelimit-policy']).toBe('"quotes";q=1000;w=60');
    expect(remaining(paid)).toBe(999);
    expect(remaining(await http().get('/quotes/AAPL').set(PAID).expect(200))).toBe(998);
    expect(remaining(await http().get('/quotes/AAPL').expect(200))).toBe(98);
    expect(remaining(await http().get('/quotes/AAPL').set(FREE).expect(200))).toBe(97);
  });

  it('GET /user_data: the injected resolver keeps a budget per user and the IP for anonymous callers', async () => {
    for (let i = 0; i < 10; i++) expect(remaining(await http().get('/user_data').set(PAID).expect(200))).toBe(9 - i);
    expectTooManyRequests(await http().get('/user_data').set(PAID));

    const free = await http().get('/user_data').set(FREE).expect(200);
    expect(free.body).toEqual({ message: 'Data for user u-free' });
    expect(remaining(free)).toBe(9);
    const anonymous = await http().get('/user_data').expect(200);
    expect(anonymous.body).toEqual({ message: 'Data for anonymous user' });
    expect(remaining(anonymous)).toBe(9);
  });
});
