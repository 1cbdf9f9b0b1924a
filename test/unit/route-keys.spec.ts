import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Controller, Get, Logger, type INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import {
  ConcurrencyLimit,
  MemoryStorage,
  parseRate,
  RATE_LIMIT_STORAGE,
  RateLimit,
  RateLimitModule,
  RateLimitService,
  SkipRateLimit,
} from '../../lib/index.js';
import { bindRules, windowLabel } from '../../lib/rules/bind-rules.js';
import { assignRouteIds, ROUTE_ID_LENGTH, routeId, RouteKeys } from '../../lib/rules/route-id.js';
import { FakeClock } from '../support/fake-clock.js';

// Two route names whose 4-character ids collide (found by search): routeId of both is 'dB7H'.
const TWIN_A = 'ProbeController.m729';
const TWIN_B = 'ProbeController.m1769';

describe('routeId', () => {
  it('is the first characters of the SHA-256 of the route name, in base64url: the same in every process and deploy', () => {
    // pinned: changing these would move every route's budget to new keys
    expect(routeId('QuoteController.quote')).toBe('NrjO');
    expect(routeId('ItemsController.findAll')).toBe('yoiK');
    expect(ROUTE_ID_LENGTH).toBe(4);
    expect(routeId('QuoteController.quote', 43)).toMatch(/^NrjO[A-Za-z0-9_-]{39}$/);
  });

  it('differs between names that differ, case included', () => {
    const names = ['A.b', 'A.c', 'a.b', 'B.b', 'QuoteController.quote', 'QuoteController.quotes'];
    expect(new Set(names.map((name) => routeId(name))).size).toBe(names.length);
  });
});

describe('assignRouteIds', () => {
  it('gives each route its routeId when none collide', () => {
    const ids = assignRouteIds(['QuoteController.quote', 'ItemsController.findAll']);
    expect(Object.fromEntries(ids)).toEqual({ 'QuoteController.quote': 'NrjO', 'ItemsController.findAll': 'yoiK' });
  });

  it('lengthens the ids of colliding routes until they differ, leaving the others alone', () => {
    expect(routeId(TWIN_A)).toBe(routeId(TWIN_B));
    const ids = assignRouteIds([TWIN_A, 'QuoteController.quote', TWIN_B]);
    expect(ids.get(TWIN_A)).toBe('dB7HM');
    expect(ids.get(TWIN_B)).toBe('dB7HN');
    expect(ids.get('QuoteController.quote')).toBe('NrjO');
  });

  it('depends on the set of routes only, never on their order', () => {
    const names = [TWIN_A, TWIN_B, 'QuoteController.quote', 'ItemsController.findAll', 'ProbeController.m1964', 'ProbeController.m6212'];
    const expected = Object.fromEntries(assignRouteIds(names));
    for (let shift = 1; shift < names.length; shift++) {
      const rotated = [...names.slice(shift), ...names.slice(0, shift)].reverse();
      expect(Object.fromEntries(assignRouteIds(rotated))).toEqual(expected);
    }
  });

  it('keeps clear of the bucket names the app chose', () => {
    const ids = assignRouteIds(['QuoteController.quote'], ['login', 'NrjO']);
    expect(ids.get('QuoteController.quote')).toBe(routeId('QuoteController.quote', 5));
  });
});

describe('RouteKeys', () => {
  it("maps a bucket named after a route to the route's id, and any other bucket to itself", () => {
    const keys = new RouteKeys();
    keys.assign([{ route: 'QuoteController.quote', suffixes: ['fw1m'] }], ['login'], 'rl', { log: () => undefined } as unknown as Logger);
    expect(keys.keyOf('QuoteController.quote')).toBe('NrjO');
    expect(keys.keyOf('login')).toBe('login');
    expect(keys.bucketKey(undefined, 'QuoteController.quote')).toBe('NrjO');
    expect(keys.bucketKey('login', 'QuoteController.quote')).toBe('login');
  });

  it('gives a route start-up did not see an id of its own when first asked, clear of the others', () => {
    const keys = new RouteKeys();
    keys.assign([{ route: TWIN_A, suffixes: ['fw1m'] }], [], 'rl', { log: () => undefined } as unknown as Logger);
    expect(keys.bucketKey(undefined, TWIN_A)).toBe('dB7H');
    expect(keys.bucketKey(undefined, TWIN_B)).toBe('dB7HN');
    expect(keys.bucketKey(undefined, TWIN_B)).toBe('dB7HN');
    expect(keys.keyOf(TWIN_B)).toBe('dB7HN');
  });
});

describe('windowLabel', () => {
  it.each([
    [1_000, '1s'],
    [30_000, '30s'],
    [90_000, '90s'],
    [60_000, '1m'],
    [300_000, '5m'],
    [5_400_000, '90m'],
    [3_600_000, '1h'],
    [7_200_000, '2h'],
    [86_400_000, '1d'],
    [604_800_000, '7d'],
    [1_500, '1500ms'],
    [1, '1ms'],
  ])('labels %d ms as %s', (windowMs, label) => {
    expect(windowLabel(windowMs)).toBe(label);
  });

  it('gives no two windows the same label', () => {
    const windows = new Set<number>();
    for (let ms = 1; ms <= 200_000; ms += 7) windows.add(ms);
    for (let s = 1; s <= 200_000; s += 1) windows.add(s * 1_000);
    for (let m = 1; m <= 5_000; m++) windows.add(m * 60_000).add(m * 3_600_000).add(m * 86_400_000);
    const labels = new Set([...windows].map(windowLabel));
    expect(labels.size).toBe(windows.size);
  });

  it('ends each rule\'s key suffix: bucket, algorithm code and window', () => {
    const rules = bindRules(parseRate('10/second; 100/minute; 1000/day'), { name: 'q', bucket: 'NrjO', algorithm: 'fixed-window' });
    expect(rules.map((rule) => rule.keySuffix)).toEqual(['NrjO:fw1s', 'NrjO:fw1m', 'NrjO:fw1d']);
    const [gcra] = bindRules(parseRate('5 per 30 seconds'), { name: 'q', bucket: 'login', algorithm: 'gcra' });
    expect(gcra.keySuffix).toBe('login:gc30s');
  });
});

const A = 'm729';
const B = 'm1769';

@Controller('probe')
class ProbeController {
  @RateLimit('5/minute')
  @Get('plain')
  plain() {
    return 'ok';
  }

  @RateLimit('10/second; 100/hour', { algorithm: 'gcra' })
  @Get('stacked')
  stacked() {
    return 'ok';
  }

  @RateLimit('5/minute', { bucket: 'shared' })
  @Get('shared')
  shared() {
    return 'ok';
  }

  @RateLimit(() => '5/minute')
  @Get('dynamic')
  dynamic() {
    return 'ok';
  }

  @ConcurrencyLimit(2)
  @Get('slots')
  slots() {
    return 'ok';
  }

  @RateLimit('5/minute')
  @Get('a')
  [A]() {
    return 'ok';
  }

  @RateLimit('5/minute')
  @Get('b')
  [B]() {
    return 'ok';
  }

  @SkipRateLimit()
  @RateLimit('5/minute')
  @Get('skipped')
  skipped() {
    return 'ok';
  }
}

describe('route ids in an app', () => {
  let app: INestApplication;
  let storage: MemoryStorage;
  let logged: string[];
  const clock = new FakeClock();

  beforeAll(async () => {
    const spy = jest.spyOn(Logger.prototype, 'log').mockImplementation(function (this: Logger, message: unknown) {
      if ((this as unknown as { context?: string }).context === 'RateLimitModule') logged.push(String(message));
    });
    logged = [];
    try {
      const moduleRef = await Test.createTestingModule({
        imports: [RateLimitModule.forRoot({ storage: new MemoryStorage({ clock: clock.now }) })],
        controllers: [ProbeController],
      }).compile();
      app = moduleRef.createNestApplication({ logger: false });
      await app.init();
    } finally {
      spy.mockRestore();
    }
    storage = app.get(RATE_LIMIT_STORAGE);
  });
  afterAll(() => app?.close());

  it('logs once at start-up which key belongs to which route, its colliding routes lengthened', () => {
    expect(logged).toEqual([
      'RateLimit keys: ' +
        [
          `ProbeController.dynamic → rl:{…}:${routeId('ProbeController.dynamic')}:fw…`,
          `ProbeController.m1769 → rl:{…}:dB7HN:fw1m`,
          `ProbeController.m729 → rl:{…}:dB7HM:fw1m`,
          `ProbeController.plain → rl:{…}:${routeId('ProbeController.plain')}:fw1m`,
          `ProbeController.slots → rl:{…}:${routeId('ProbeController.slots')}:cc`,
          `ProbeController.stacked → rl:{…}:${routeId('ProbeController.stacked')}:gc1s, rl:{…}:${routeId('ProbeController.stacked')}:gc1h`,
        ].join('; '),
    ]);
  });

  it('keys each route as logged', async () => {
    const server = app.getHttpServer();
    for (const path of ['plain', 'stacked', 'shared', 'dynamic', 'a', 'b']) await request(server).get(`/probe/${path}`).expect(200);
    const expiring = (key: string) => storage.expiresAt(`rl:{ip:127.0.0.1}:${key}`);
    for (const key of [
      `${routeId('ProbeController.plain')}:fw1m`,
      `${routeId('ProbeController.stacked')}:gc1s`,
      `${routeId('ProbeController.stacked')}:gc1h`,
      'shared:fw1m',
      `${routeId('ProbeController.dynamic')}:fw1m`,
      'dB7HM:fw1m',
      'dB7HN:fw1m',
    ]) {
      expect({ key, expires: expiring(key) !== undefined }).toEqual({ key, expires: true });
    }
  });

  it('keys RateLimitService calls that name a route as the route', async () => {
    const service = app.get(RateLimitService);
    const identity = 'ip:203.0.113.50';
    await service.consume(identity, 'ProbeController.m729');
    expect(storage.expiresAt(`rl:{${identity}}:dB7HM:fw1m`)).toBeDefined();
    const status = await service.peek(identity, 'ProbeController.m729');
    expect(status.remaining).toBe(4);
    await service.consume(identity, { bucket: 'ProbeController.plain', rate: '5/minute' });
    expect(storage.expiresAt(`rl:{${identity}}:${routeId('ProbeController.plain')}:fw1m`)).toBeDefined();
  });
});
