// Run with --expose-gc: an app on the compiled library takes 20,000 requests with distinct
// 15,000-character API keys on each of two routes (one keyed by the header, one with a rate
// function as well), then reports how much the heap grew, after GC. Plain JS: no build step but
// the library's own.
import 'reflect-metadata';
import { Agent, request } from 'node:http';
import { pathToFileURL } from 'node:url';
import { Controller, Get, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

const [libraryIndex, countArg] = process.argv.slice(2);
const { HeaderKeyResolver, RateLimit, RateLimitModule } = await import(pathToFileURL(libraryIndex).href);
const COUNT = Number(countArg ?? 20_000);
const KEY_LENGTH = 15_000;

const byKey = new HeaderKeyResolver('x-api-key');
class KeysController {
  byHeader() {
    return 'ok';
  }
  byRateFunction() {
    return 'ok';
  }
}
const method = (name, decorators) =>
  Object.defineProperty(
    KeysController.prototype,
    name,
    Reflect.decorate(decorators, KeysController.prototype, name, Object.getOwnPropertyDescriptor(KeysController.prototype, name)),
  );
method('byHeader', [Get('header'), RateLimit('1000000/hour', { key: byKey })]);
// four tiers, picked by the key's first character: four rule sets
const TIERS = ['1000000/hour', '2000000/hour', '3000000/hour', '4000000/hour'];
method('byRateFunction', [
  Get('rate-function'),
  RateLimit((context) => TIERS[context.switchToHttp().getRequest().headers['x-api-key'].charCodeAt(0) % 4], { key: byKey }),
]);
Reflect.decorate([Controller()], KeysController);
class AppModule {}
Reflect.decorate([Module({ imports: [RateLimitModule.forRoot({ storage: { type: 'memory' } })], controllers: [KeysController] })], AppModule);

const app = await NestFactory.create(AppModule, { logger: false });
await app.listen(0, '127.0.0.1');
const { port } = app.getHttpServer().address();
const agent = new Agent({ keepAlive: true, maxSockets: 8 });

const filler = 'k'.repeat(KEY_LENGTH);
const keyOf = (n) => `${n}:${filler}`.slice(0, KEY_LENGTH);
const get = (path, key) =>
  new Promise((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', path, agent, headers: { 'x-api-key': key } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ratelimit: res.headers.ratelimit }));
    });
    req.on('error', reject);
    req.end();
  });

/** Sends `count` requests per route, 8 at a time, each with a key never used before; counts statuses. */
async function flood(first, count, statuses) {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const n = first + next++;
      for (const path of ['/header', '/rate-function']) {
        const { status } = await get(path, keyOf(n));
        statuses[status] = (statuses[status] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

const heap = () => {
  for (let i = 0; i < 4; i++) globalThis.gc();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
};

// A long key is still one client: its second request sees the first.
const sameKey = [await get('/header', keyOf(-1)), await get('/header', keyOf(-1))].map((r) => r.ratelimit);
const warmUp = {};
await flood(1_000_000, 1_000, warmUp);
const before = heap();
const statuses = {};
const started = performance.now();
await flood(0, COUNT, statuses);
const seconds = (performance.now() - started) / 1000;
const after = heap();
process.stdout.write(`${JSON.stringify({ growthBytes: after - before, statuses, sameKey, seconds })}\n`);
agent.destroy();
await app.close();
process.exit(0);
