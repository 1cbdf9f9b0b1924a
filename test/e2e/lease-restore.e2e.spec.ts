import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Controller, Get, Logger, Param, Res, type INestApplication } from '@nestjs/common';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { ConcurrencyLimit, RedisStorage } from '../../lib/index.js';
import { routeId } from '../../lib/rules/route-id.js';
import { InFlight, sendGet, type HttpAnswer } from '../support/in-flight.js';
import { closeClient, startPrivateRedis, type ControllableRedis } from '../support/redis-server.js';
import { createScenarioApp, HTTP_PLATFORMS, type HttpPlatform } from '../support/scenario-app.js';
import { until } from '../support/until.js';

/**
 * `@ConcurrencyLimit` across a real Redis restart, on Express and Fastify. The report: Redis
 * restarted (empty) while two requests were in flight under a limit of 2, forgot both leases, and
 * two more were admitted: 4 handlers at once. Each RedisStorage remembers the leases it holds and,
 * once it has reconnected, puts back those Redis lost; releases that failed meanwhile are sent again.
 *
 * Redis only: a MemoryStorage lives in the process that holds the leases, so there is no restart
 * that forgets them while their requests run; not applicable.
 *
 * The server is a private redis-server (startPrivateRedis, whatever REDIS_URL says): the tests kill
 * and restart it. Handlers stay in flight on promises the tests resolve; no test sleeps to order events.
 */

const flight = new InFlight();
/** The Node response under an Express response or a Fastify reply. */
const rawOf = (response: unknown) => ((response as { raw?: unknown }).raw ?? response) as { once(event: 'close', listener: () => void): unknown };

@Controller()
class ExportsController {
  @Get('export/:id')
  @ConcurrencyLimit(2)
  async export(@Param('id') id: string, @Res({ passthrough: true }) response: unknown) {
    flight.watchClose(id, rawOf(response));
    await flight.hold(id);
    return { id };
  }
}

/** Every request comes from 127.0.0.1: one client, one sorted set of leases. */
const KEY = `rl:{ip:127.0.0.1}:${routeId('ExportsController.export')}:cc`;


interface Instance {
  readonly app: INestApplication;
  readonly port: number;
  readonly storage: RedisStorage;
}

/** A request in flight: `arrived` once its handler holds, or its answer if it got none. */
interface Sent {
  readonly id: string;
  readonly answer: Promise<HttpAnswer>;
}

function send(instance: Instance, id: string): Sent {
  return { id, answer: sendGet(instance.port, `/export/${id}`).answer };
}

/** Whichever comes first: the handler of `request` holds, or the request is answered (with its status). */
function outcome(request: Sent): Promise<'in flight' | number> {
  return Promise.race([flight.arrived(request.id).then(() => 'in flight' as const), request.answer.then((answer) => answer.status)]);
}

let redis: ControllableRedis;
let admin: Redis;
/** False between a test's kill and restart, so a failed test still leaves Redis up for the next. */
let up = true;
beforeAll(async () => {
  redis = await startPrivateRedis();
  admin = redis.client();
});
afterAll(async () => {
  // every client connected again (the harness's own too) before it quits them: no socket left closing
  await redis?.flush();
  await admin?.ping();
  await redis?.stop();
});

/** SIGKILL: every connection drops at once, and every lease is gone with the process. */
async function kill(): Promise<void> {
  up = false;
  await redis.kill();
}

/** The same port, empty. */
async function restart(): Promise<void> {
  await redis.restart();
  up = true;
}

/**
 * Resolves once `instance`'s storage has reconnected and Redis has run what it sent on
 * reconnecting: the storage's own 'ready' listeners run before this one, and a PING on the same
 * connection is answered after the commands sent before it.
 */
function reconnected(instance: Instance): Promise<void> {
  return new Promise<void>((resolve) => instance.storage.client.once('ready', () => resolve())).then(async () => {
    await instance.storage.client.ping();
  });
}

const leasesInRedis = async () => admin.zcard(KEY);

/** b's lease alone is in Redis: one more request gets the other slot, the next is denied; then all are released. */
async function expectOneSlotTakenBy(instance: Instance, b: Sent): Promise<void> {
  expect(await leasesInRedis()).toBe(1);
  const c = send(instance, 'c');
  expect(await outcome(c)).toBe('in flight');
  expect(await outcome(send(instance, 'd'))).toBe(429);
  flight.release('b');
  flight.release('c');
  expect((await Promise.all([b.answer, c.answer])).map((answer) => answer.status)).toEqual([200, 200]);
  await until(async () => (await leasesInRedis()) === 0, 'every lease released');
}

const instances: Instance[] = [];
const warnings: string[] = [];
/** Clients the tests created themselves: the storage never closes a client it was given. */
const ownClients: Redis[] = [];

/**
 * An app on `platform`. 'deny': a storage failure answers 503, so a 429 below is the limit and
 * nothing else. A timeout of 500 ms, as the first script after a restart is sent in full (EVAL,
 * not EVALSHA) on a machine that may be busy; not more, as each call leaves a timer that long.
 */
async function serve(platform: HttpPlatform, storage = new RedisStorage({ url: redis.url }), storageTimeout = 500): Promise<Instance> {
  const app = await createScenarioApp([ExportsController], { storage, onStorageError: 'deny', storageTimeout }, { platform, forceCloseConnections: true });
  await app.listen(0, '127.0.0.1');
  const instance = { app, port: (app.getHttpServer().address() as AddressInfo).port, storage };
  instances.push(instance);
  return instance;
}

beforeEach(async () => {
  warnings.length = 0;
  jest.spyOn(Logger.prototype, 'warn').mockImplementation((message: unknown) => void warnings.push(String(message)));
  await redis.flush();
});
afterEach(async () => {
  flight.clear(); // no handler stays held past a test, holding app.close() up
  await Promise.all(instances.splice(0).map((instance) => instance.app.close())); // closes its storage
  await Promise.all(ownClients.splice(0).map(closeClient));
  jest.restoreAllMocks();
  if (!up) await restart();
  await admin.config('SET', 'maxclients', '10000');
});

// first: the longer timeout of these tests leaves a timer behind that the tests after them outlast
describe.each(HTTP_PLATFORMS)('with a client of your own, across a Redis restart, on %s', (platform: HttpPlatform) => {
  it("with a client of your own that queues commands while disconnected (ioredis's default), a request made during the restart waits, and is denied", async () => {
    // The queued acquire is sent as soon as the connection is back, before ioredis says 'ready'
    // and so before the storage's restore. It carries the newest lease this instance holds, finds
    // it missing, and is sent again with all of them: counted with them, whichever of it and the
    // restore comes first. (A client the storage creates fails such a request at once instead.)
    const client = new Redis(redis.url, { disconnectTimeout: 200 });
    client.on('error', () => undefined);
    ownClients.push(client);
    const storage = new RedisStorage({ client });
    const acquire = jest.spyOn(storage, 'acquire');
    // it waits while Redis restarts (about 100 ms): the timeout leaves it room
    const instance = await serve(platform, storage, 1_500);
    const a = send(instance, 'a');
    const b = send(instance, 'b');
    expect(await Promise.all([outcome(a), outcome(b)])).toEqual(['in flight', 'in flight']);

    const back = reconnected(instance);
    await kill();
    await until(() => client.status !== 'ready', 'the client to see Redis gone');
    const c = send(instance, 'c');
    await until(() => acquire.mock.calls.length === 3, "c's acquire, queued by the client");
    await restart();
    await back;

    expect(await outcome(c)).toBe(429);
    expect(await leasesInRedis()).toBe(2);
    flight.release('a');
    flight.release('b');
    expect((await Promise.all([a.answer, b.answer])).map((answer) => answer.status)).toEqual([200, 200]);
    await until(async () => (await leasesInRedis()) === 0, 'both leases released');
  });
});

describe.each(HTTP_PLATFORMS)('concurrency leases across a Redis restart, on %s', (platform: HttpPlatform) => {
  it('two requests hold both slots; Redis restarts empty; the storage puts both leases back, so a third is denied', async () => {
    const instance = await serve(platform);
    const a = send(instance, 'a');
    const b = send(instance, 'b');
    expect(await Promise.all([outcome(a), outcome(b)])).toEqual(['in flight', 'in flight']);
    expect(await leasesInRedis()).toBe(2);
    expect(instance.storage.leasesHeld).toBe(2);

    await admin.set('written-before-the-restart', '1');
    const back = reconnected(instance);
    await kill();
    await restart();
    await back;
    expect(await admin.exists('written-before-the-restart')).toBe(0); // a new, empty Redis

    // without the restore the restarted Redis would count none, and admit two more
    expect(await outcome(send(instance, 'c'))).toBe(429);
    expect(await admin.zrange(KEY, '0', '-1')).toHaveLength(2);
    expect(warnings).toContain(`Put back 2 concurrency lease(s) Redis had lost under key "${KEY}"`);

    // the handlers end: their releases reach the new Redis, and exactly two fit again
    flight.release('a');
    flight.release('b');
    expect((await Promise.all([a.answer, b.answer])).map((answer) => answer.status)).toEqual([200, 200]);
    await until(async () => (await leasesInRedis()) === 0, 'both leases released');
    expect(instance.storage.leasesHeld).toBe(0);
    const again = [send(instance, 'd'), send(instance, 'e')];
    expect(await Promise.all(again.map(outcome))).toEqual(['in flight', 'in flight']);
    expect(await outcome(send(instance, 'f'))).toBe(429);
    flight.release('d');
    flight.release('e');
    expect((await Promise.all(again.map((request) => request.answer))).map((answer) => answer.status)).toEqual([200, 200]);
  });

  it('a release that fails while Redis is down is not put back after the restart: its slot is free, and only that one', async () => {
    const instance = await serve(platform);
    const a = send(instance, 'a');
    const b = send(instance, 'b');
    expect(await Promise.all([outcome(a), outcome(b)])).toEqual(['in flight', 'in flight']);

    const back = reconnected(instance);
    await kill();
    flight.release('a'); // a's work ends while Redis is down: its release cannot be sent
    expect((await a.answer).status).toBe(200);
    await until(() => warnings.some((w) => w.startsWith(`Could not release a concurrency slot under key "${KEY}"`)), 'the failed release');
    expect(instance.storage.leasesHeld).toBe(1);
    await restart();
    await back;

    // b's lease came back, a's did not: one slot is taken, one is free
    await expectOneSlotTakenBy(instance, b);
  });

  it('a release that failed while Redis kept its data is sent again on reconnecting: the lease does not stay behind', async () => {
    // Redis does not restart here (a restarted, empty Redis has nothing left to release): the
    // storage's connection is cut and new ones are refused, so the release fails while Redis
    // still holds the lease; left there, it would take a slot for the rest of its 60 s lease.
    const instance = await serve(platform);
    const a = send(instance, 'a');
    const b = send(instance, 'b');
    expect(await Promise.all([outcome(a), outcome(b)])).toEqual(['in flight', 'in flight']);

    const connection = Number(await instance.storage.client.client('ID'));
    const back = reconnected(instance);
    await admin.config('SET', 'maxclients', '1'); // the connections open stay; every new one is refused
    await admin.client('KILL', 'ID', String(connection));
    await until(() => instance.storage.client.status !== 'ready', 'the storage to see its connection cut');
    flight.release('a');
    expect((await a.answer).status).toBe(200);
    await until(() => warnings.some((w) => w.startsWith(`Could not release a concurrency slot under key "${KEY}"`)), 'the failed release');
    expect(await admin.zrange(KEY, '0', '-1')).toHaveLength(2); // a's lease is still there
    await admin.config('SET', 'maxclients', '10000');
    await back;

    await expectOneSlotTakenBy(instance, b);
  });

  it('two app instances on one Redis, one lease each of the same client: after the restart both put theirs back, and a third is denied', async () => {
    const one = await serve(platform);
    const two = await serve(platform);
    const a = send(one, 'a');
    expect(await outcome(a)).toBe('in flight');
    const b = send(two, 'b');
    expect(await outcome(b)).toBe('in flight');
    expect([one.storage.leasesHeld, two.storage.leasesHeld]).toEqual([1, 1]);

    const back = Promise.all([reconnected(one), reconnected(two)]);
    await kill();
    await restart();
    await back;

    expect(await outcome(send(one, 'c1'))).toBe(429);
    expect(await outcome(send(two, 'c2'))).toBe(429);
    expect(await leasesInRedis()).toBe(2);
    expect(warnings.filter((w) => w === `Put back 1 concurrency lease(s) Redis had lost under key "${KEY}"`)).toHaveLength(2);

    flight.release('a');
    flight.release('b');
    expect((await Promise.all([a.answer, b.answer])).map((answer) => answer.status)).toEqual([200, 200]);
    await until(async () => (await leasesInRedis()) === 0, 'both leases released');
    const again = [send(one, 'd'), send(two, 'e')];
    expect(await Promise.all(again.map(outcome))).toEqual(['in flight', 'in flight']);
    expect(await outcome(send(one, 'f'))).toBe(429);
    expect(await outcome(send(two, 'g'))).toBe(429);
    flight.release('d');
    flight.release('e');
    expect((await Promise.all(again.map((request) => request.answer))).map((answer) => answer.status)).toEqual([200, 200]);
  });
});
