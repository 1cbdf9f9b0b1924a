import 'reflect-metadata';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import type { Express } from 'express';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import request from 'supertest';
import { ALGORITHM_NAMES } from '../../lib/algorithms/algorithm-registry.js';
import {
  HeaderKeyResolver,
  MemoryStorage,
  RateLimit,
  RateLimitModule,
  type AlgorithmName,
  type RateLimitResult,
  type RateLimitStorage,
} from '../../lib/index.js';
import { identityKeyPart } from '../../lib/keys/storage-key.js';
import { routeId } from '../../lib/rules/route-id.js';
import { brief, checker, keyOf, rulesOf } from '../conformance/limiter.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { createHttpApp, HTTP_PLATFORMS, storageKinds, type HttpPlatform } from '../support/scenario-app.js';
import { closeStorage } from '../support/storage-targets.js';

@Controller()
class HostileController {
  @Get('ip')
  @RateLimit('5/minute')
  ip() {
    return { ok: true };
  }

  @Get('api-key')
  @RateLimit('3/minute', { key: new HeaderKeyResolver() })
  apiKey() {
    return { ok: true };
  }
}

const IP_ROUTE = routeId('HostileController.ip');
const API_KEY_ROUTE = routeId('HostileController.apiKey');
const IP_KEY = (ip: string) => `rl:{ip:${ip}}:${IP_ROUTE}:fw1m`;
const API_KEY = (value: string) => `rl:{${identityKeyPart(`x-api-key:${value}`)}}:${API_KEY_ROUTE}:fw1m`;
/** A storage key as it may look: short, printable, exactly one `{...}` hash tag. */
const SANE_KEY = new RegExp(`^rl:\\{[A-Za-z0-9._:@/+=#-]+\\}:(${IP_ROUTE}|${API_KEY_ROUTE}):fw1m$`);

/**
 * Trusting the proxies in front, each platform its own way. Express counts hops from the socket;
 * Fastify (5.12) takes no hop count, which could not tell a proxy from a client that connects
 * directly, so it is given the proxies' addresses: here the proxy connects from loopback, and
 * the second one stands in 10.0.0.0/8. Same requests, same keys.
 */
const ONE_PROXY = { express: 1, fastify: '127.0.0.1' } as const;
const TWO_PROXIES = { express: 2, fastify: '127.0.0.1, 10.0.0.0/8' } as const;

/** `r` of the `RateLimit` header: quota left after this request. */
function remaining(headers: Record<string, string | string[] | undefined>): number {
  const match = /;r=(\d+);/.exec(String(headers['ratelimit']));
  if (!match) throw new Error(`no r= in RateLimit header "${headers['ratelimit']}"`);
  return Number(match[1]);
}

interface RawResponse {
  status: number;
  headers: Record<string, string>;
}

/**
 * A GET written byte for byte on a socket: no HTTP client would send these header values
 * (control characters), so this is the only way to see what the library does with them.
 */
function rawGet(port: number, path: string, header: string, value: Buffer): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('end', () => {
      const [head] = Buffer.concat(chunks).toString('latin1').split('\r\n\r\n');
      const [statusLine, ...lines] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({ status: Number(statusLine.split(' ')[1]), headers });
    });
    // write, not end: a half-closed socket may be dropped before an async check answers.
    socket.write(
      Buffer.concat([
        Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${header}: `, 'latin1'),
        value,
        Buffer.from('\r\n\r\n', 'latin1'),
      ]),
    );
  });
}

let redis: TestRedis;
let admin: Redis;
beforeAll(async () => {
  redis = await startRedis();
  admin = redis.client();
});
afterAll(async () => {
  await redis?.stop();
});

describe.each(storageKinds(() => redis))('hostile input on $name storage', (kind) => {
  let app: INestApplication | undefined;
  let server: Server | undefined;
  let storage: RateLimitStorage;
  let clock: FakeClock;
  let url: string;
  let port: number;

  beforeEach(async () => {
    await redis.flush();
    clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 0, 250));
  });
  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
    await app?.close();
    app = server = undefined;
  });

  /**
   * The app on an http.Server of our own: 256 kB of headers instead of Node's 16 kB default, and
   * optionally the lenient parser, so hostile bytes reach the key resolver instead of Node's 400.
   * Express is handed the server's requests; Fastify builds its server with the factory.
   */
  async function start(
    platform: HttpPlatform,
    { trustProxy, lenient = false }: { trustProxy?: boolean | number | string; lenient?: boolean } = {},
  ) {
    storage = kind.create(clock);
    const moduleRef = await Test.createTestingModule({
      // These tests are about keys: a loaded machine must not turn a slow answer into an uncounted pass.
      imports: [RateLimitModule.forRoot({ storage, storageTimeout: 5_000 })],
      controllers: [HostileController],
    }).compile();
    const serverOptions = { maxHeaderSize: 256 * 1024, insecureHTTPParser: lenient };
    app = await createHttpApp(moduleRef, {
      platform,
      trustProxy,
      fastifyServerFactory: (handler) => (server = createServer(serverOptions, handler)),
    });
    if (platform === 'express') {
      server = createServer(serverOptions, app.getHttpAdapter().getInstance() as Express);
      await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    } else {
      await app.listen(0, '127.0.0.1');
    }
    port = (server!.address() as AddressInfo).port;
    url = `http://127.0.0.1:${port}`;
  }

  const get = (path: string, headers: Record<string, string> = {}) => request(url).get(path).set(headers);
  const countdown = async (path: string, headers: Record<string, string>) => remaining((await get(path, headers).expect(200)).headers);

  /** Exactly these keys are stored: listed on Redis, counted and looked up on memory. */
  async function expectKeys(expected: string[]): Promise<void> {
    if (kind.name === 'redis') expect((await admin.keys('*')).sort()).toEqual([...expected].sort());
    else expect((storage as MemoryStorage).size).toBe(expected.length);
    for (const key of expected) expect(await kind.expiresAt(storage, key)).toBeGreaterThan(clock.now());
  }

  describe.each(HTTP_PLATFORMS)('on %s', (platform) => {
    describe('proxies', () => {
      it('without trust proxy, neither X-Forwarded-For nor Forwarded changes the key', async () => {
        await start(platform);
        expect(await countdown('/ip', {})).toBe(4);
        expect(await countdown('/ip', { 'X-Forwarded-For': '203.0.113.5' })).toBe(3);
        expect(await countdown('/ip', { 'X-Forwarded-For': '6.6.6.6, 203.0.113.5' })).toBe(2);
        expect(await countdown('/ip', { Forwarded: 'for=198.51.100.7' })).toBe(1);
        expect(await countdown('/ip', { Forwarded: 'for="[2001:db8::1]:4711";proto=https', 'X-Forwarded-For': '::ffff:1.2.3.4' })).toBe(0);
        await get('/ip', { 'X-Forwarded-For': '10.0.0.1', Forwarded: 'for=10.0.0.1' }).expect(429);
        await expectKeys([IP_KEY('127.0.0.1')]);
      });

      it('with one trusted hop, keys by the address that proxy saw and ignores spoofed left-most values', async () => {
        await start(platform, { trustProxy: ONE_PROXY[platform] });
        expect(await countdown('/ip', { 'X-Forwarded-For': '6.6.6.6, 203.0.113.5' })).toBe(4);
        expect(await countdown('/ip', { 'X-Forwarded-For': '7.7.7.7, 8.8.8.8, 203.0.113.5' })).toBe(3);
        expect(await countdown('/ip', { 'X-Forwarded-For': '203.0.113.5' })).toBe(2);
        // Express and Fastify read only X-Forwarded-For; a Forwarded header cannot move the key.
        expect(await countdown('/ip', { 'X-Forwarded-For': '203.0.113.5', Forwarded: 'for=6.6.6.6' })).toBe(1);
        // Position decides, not value: here 6.6.6.6 is what the proxy saw.
        expect(await countdown('/ip', { 'X-Forwarded-For': '203.0.113.5, 6.6.6.6' })).toBe(4);
        // No header: the proxy itself is the client.
        expect(await countdown('/ip', {})).toBe(4);
        await expectKeys([IP_KEY('203.0.113.5'), IP_KEY('6.6.6.6'), IP_KEY('127.0.0.1')]);
      });

      it('with two trusted hops, keys by the third address from the right', async () => {
        await start(platform, { trustProxy: TWO_PROXIES[platform] });
        expect(await countdown('/ip', { 'X-Forwarded-For': '6.6.6.6, 198.51.100.1, 10.0.0.2' })).toBe(4);
        expect(await countdown('/ip', { 'X-Forwarded-For': '7.7.7.7, 198.51.100.1, 10.9.9.9' })).toBe(3);
        expect(await countdown('/ip', { 'X-Forwarded-For': '198.51.100.1, 10.0.0.2' })).toBe(2);
        await expectKeys([IP_KEY('198.51.100.1')]);
      });

      it("with 'loopback' trusted, keys by the first address right of the loopback hops", async () => {
        await start(platform, { trustProxy: 'loopback' });
        expect(await countdown('/ip', { 'X-Forwarded-For': '6.6.6.6, 203.0.113.7, 127.0.0.1' })).toBe(4);
        expect(await countdown('/ip', { 'X-Forwarded-For': '203.0.113.7, ::1, 127.0.0.5' })).toBe(3);
        expect(await countdown('/ip', { 'X-Forwarded-For': '9.9.9.9, 203.0.113.7' })).toBe(2);
        // 10.0.0.1 is not loopback, so it is the client, whatever stands left of it.
        expect(await countdown('/ip', { 'X-Forwarded-For': '203.0.113.7, 10.0.0.1' })).toBe(4);
        await expectKeys([IP_KEY('203.0.113.7'), IP_KEY('10.0.0.1')]);
      });
    });

    describe('IPv6', () => {
      it('gives a client rotating through one /64 a single budget, and the neighbouring /64s their own', async () => {
        await start(platform, { trustProxy: ONE_PROXY[platform] });
        const from = (ip: string) => countdown('/ip', { 'X-Forwarded-For': ip });
        expect(await from('2001:db8:1:2::1')).toBe(4);
        expect(await from('2001:db8:1:2:ffff:ffff:ffff:ffff')).toBe(3);
        expect(await from('2001:DB8:1:2:abcd::9')).toBe(2);
        expect(await from('2001:db8:1:2:0:0:0:2')).toBe(1);
        expect(await from('2001:db8:1:3::1')).toBe(4);
        expect(await from('2001:db8:1:1::1')).toBe(4);
        expect(await from('2001:db8:1:2::dead')).toBe(0);
        await get('/ip', { 'X-Forwarded-For': '2001:db8:1:2::beef' }).expect(429);
        await expectKeys([IP_KEY('2001:db8:1:2::/64'), IP_KEY('2001:db8:1:3::/64'), IP_KEY('2001:db8:1:1::/64')]);
      });

      it('counts an IPv4-mapped address, in any spelling, against the IPv4 client', async () => {
        await start(platform, { trustProxy: ONE_PROXY[platform] });
        const from = (ip: string) => countdown('/ip', { 'X-Forwarded-For': ip });
        expect(await from('203.0.113.9')).toBe(4);
        expect(await from('::ffff:203.0.113.9')).toBe(3);
        expect(await from('::FFFF:cb00:7109')).toBe(2); // 203.0.113.9 in hex
        expect(await from('0:0:0:0:0:ffff:203.0.113.9')).toBe(1);
        expect(await from('::ffff:203.0.113.10')).toBe(4);
        await expectKeys([IP_KEY('203.0.113.9'), IP_KEY('203.0.113.10')]);
      });
    });

    describe('key hygiene', () => {
      it('handles 64 kB api keys: one short key each, and only identical values share a budget', async () => {
        await start(platform);
        const a = 'k'.repeat(65_536);
        const b = `${'k'.repeat(65_535)}j`;
        const c = 'k'.repeat(65_535);
        expect(await countdown('/api-key', { 'x-api-key': a })).toBe(2);
        expect(await countdown('/api-key', { 'x-api-key': b })).toBe(2);
        expect(await countdown('/api-key', { 'x-api-key': c })).toBe(2);
        expect(await countdown('/api-key', { 'x-api-key': a })).toBe(1);
        expect(await countdown('/api-key', { 'x-api-key': b })).toBe(1);
        const keys = [API_KEY(a), API_KEY(b), API_KEY(c)];
        for (const key of keys) {
          expect(key.length).toBeLessThan(120);
          expect(key).toMatch(SANE_KEY);
        }
        await expectKeys(keys);
      });

      // Node decodes header bytes as latin1; the lenient parser lets control characters through.
      const HOSTILE: [string, Buffer][] = [
        ['latin1 bytes', Buffer.from([0xe9, 0x80, 0xff])],
        ['the same bytes reordered', Buffer.from([0x80, 0xe9, 0xff])],
        ['UTF-8 of é (not latin1 é)', Buffer.from('é', 'utf8')],
        ['NEL and NBSP', Buffer.from([0x85, 0xa0, 0x41])],
        ['a plain key', Buffer.from('plain-key')],
        ['the plain key plus NUL', Buffer.from('plain-key\x00', 'latin1')],
        ['NUL inside', Buffer.from('plain\x00key', 'latin1')],
        ['terminal escapes', Buffer.from('\x1b[2J\x1b[31mred', 'latin1')],
        ['DEL, VT, FF, BEL', Buffer.from('a\x7fb\x0bc\x0cd\x07', 'latin1')],
        ['a tab inside', Buffer.from('a\tb', 'latin1')],
        ['a space inside', Buffer.from('a b')],
        ['hash-tag injection', Buffer.from('x}:{other')],
        ['a fake key', Buffer.from(`}:${IP_ROUTE}:fw1m\x00rl:{ip:127.0.0.1`)],
      ];

      it('gives every distinct hostile value its own short, clean key, and identical values one budget', async () => {
        await start(platform, { lenient: true });
        for (const pass of [2, 1]) {
          for (const [what, value] of HOSTILE) {
            const response = await rawGet(port, '/api-key', 'x-api-key', value);
            expect({ what, status: response.status, r: remaining(response.headers) }).toEqual({ what, status: 200, r: pass });
          }
        }
        const keys = HOSTILE.map(([, value]) => API_KEY(value.toString('latin1')));
        for (const key of keys) {
          expect(key.length).toBeLessThan(120);
          expect(key).toMatch(SANE_KEY);
        }
        expect(new Set(keys).size).toBe(HOSTILE.length);
        expect(keys).toContain(`rl:{x-api-key:plain-key}:${API_KEY_ROUTE}:fw1m`);
        await expectKeys(keys);
        // The IP budget was never touched, whatever the keys pretended to be.
        expect(await countdown('/ip', {})).toBe(4);
      });

      it('hashes a hostile X-Forwarded-For hop behind a trusted proxy into one short key', async () => {
        await start(platform, { trustProxy: ONE_PROXY[platform], lenient: true });
        const junk = `}{rl:${'x'.repeat(64 * 1024)}`;
        const junkValue = Buffer.from(`6.6.6.6, ${junk}`);
        const first = await rawGet(port, '/ip', 'X-Forwarded-For', junkValue);
        expect([first.status, remaining(first.headers)]).toEqual([200, 4]);
        const again = await rawGet(port, '/ip', 'X-Forwarded-For', Buffer.from(junk));
        expect([again.status, remaining(again.headers)]).toEqual([200, 3]);
        const control = await rawGet(port, '/ip', 'X-Forwarded-For', Buffer.from('\x00\x1b[0m', 'latin1'));
        expect([control.status, remaining(control.headers)]).toEqual([200, 4]);
        const keys = [junk, '\x00\x1b[0m'].map((ip) => `rl:{${identityKeyPart(`ip:${ip}`)}}:${IP_ROUTE}:fw1m`);
        for (const key of keys) expect(key).toMatch(SANE_KEY);
        await expectKeys(keys);
      });
    });
  });

  describe('cardinality', () => {
    // When each algorithm's state stops mattering, from a first request at :00.250 of 5/minute.
    const LIFETIME: Record<AlgorithmName, number> = {
      'fixed-window': 59_750, // the window's end
      'sliding-window-log': 60_000,
      'sliding-window-counter': 119_750, // the previous window still counts until the next one ends
      'token-bucket': 12_000, // one token refills in 60 s / 5
      'leaky-bucket': 12_000,
      gcra: 12_000,
    };

    it('gives every key a flood of idle clients leaves behind an expiry, for every algorithm', async () => {
      storage = kind.create(clock);
      try {
        const clients = 100;
        for (const algorithm of ALGORITHM_NAMES) {
          const rules = rulesOf([{ rate: '5/minute', algorithm }]);
          const results = await Promise.all(
            Array.from({ length: clients }, (_, c): Promise<RateLimitResult> | RateLimitResult =>
              storage.check([{ key: keyOf(`c${c}`, rules[0]), rule: rules[0] }], 1),
            ),
          );
          expect(results.every((r) => r.allowed && r.decisions[0].remaining === 4)).toBe(true);
          for (const c of [0, clients - 1]) {
            expect({ algorithm, ttl: (await kind.expiresAt(storage, keyOf(`c${c}`, rules[0])))! - clock.now() }).toEqual({
              algorithm,
              ttl: LIFETIME[algorithm],
            });
          }
        }
        if (kind.name === 'redis') {
          // Every key in Redis, not only the sampled ones: none may live forever.
          const keys = await admin.keys('*');
          expect(keys).toHaveLength(clients * ALGORITHM_NAMES.length);
          const pipeline = admin.pipeline();
          for (const key of keys) pipeline.call('PEXPIRETIME', key);
          const expiries = (await pipeline.exec())!.map(([, at]) => Number(at) - clock.now());
          expect(Math.min(...expiries)).toBe(12_000);
          expect(Math.max(...expiries)).toBe(119_750);
        } else {
          expect((storage as MemoryStorage).size).toBe(clients * ALGORITHM_NAMES.length);
          clock.advance(119_750);
          // freed by the sweep once past their expiry and its few seconds of grace
          (storage as MemoryStorage).reclaim(clock.now() + 5_000);
          expect((storage as MemoryStorage).size).toBe(0);
        }
      } finally {
        await closeStorage(storage);
      }
    });
  });
});

describe('MemoryStorage under a flood of distinct clients', () => {
  it('never holds more than maxKeys, keeping the most recently charged clients', async () => {
    const clock = new FakeClock();
    const storage = new MemoryStorage({ maxKeys: 1000, clock: clock.now });
    const rules = rulesOf([
      { rate: '5/minute', algorithm: 'fixed-window' },
      { rate: '100/day', algorithm: 'sliding-window-log' },
    ]);
    let peak = 0;
    let admitted = 0;
    for (let c = 0; c < 50_000; c++) {
      const result = storage.check(rules.map((rule) => ({ key: keyOf(`c${c}`, rule), rule })), 1);
      if (result.allowed) admitted++;
      if (storage.size > peak) peak = storage.size;
    }
    expect(admitted).toBe(50_000);
    expect(peak).toBe(1000);
    expect(storage.size).toBe(1000);
    // The last 500 clients (two keys each) are kept; their second request is counted on.
    expect(brief(await checker(storage, rules, 'c49999')())).toEqual([true, 3]);
    expect(brief(await checker(storage, rules, 'c49500')())).toEqual([true, 3]);
    expect(storage.expiresAt(keyOf('c49499', rules[0]))).toBeUndefined();
    // The first clients were evicted, so they start over.
    expect(storage.expiresAt(keyOf('c0', rules[0]))).toBeUndefined();
    expect(brief(await checker(storage, rules, 'c0')())).toEqual([true, 4]);
    expect(storage.size).toBe(1000);
  });
});
