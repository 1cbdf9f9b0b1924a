import 'reflect-metadata';
import { Body, Controller, Headers, HttpCode, Post, UnauthorizedException, type ExecutionContext } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { RateLimit, RateLimitService } from '../../lib/index.js';
import { startPrivateRedis, type ControllableRedis } from '../support/redis-server.js';
import { HTTP_PLATFORMS } from '../support/scenario-app.js';
import { clearOfBoundary, deploy, report, send, sleep, type Deployment, type Row } from './support.js';

/**
 * Attack 3 of issue 19, with real timing: a reset racing a denial in flight.
 *
 * A client is locked out (3 failures a minute, then 15 minutes). Instance A resets it while
 * instance B checks it; Redis is paused for 30 ms (CLIENT PAUSE), so B's check and A's reset
 * queue up and run in whichever order Redis takes them. When B's check runs first it gets the
 * lockout, and Redis publishes A's reset right after: B reads the two on two connections, in
 * either order. The previous release could keep the denial in B's block cache after hearing the
 * reset: B's next request for the client was refused from memory for 15 minutes (8 of 19 trials).
 */

// ---- the attacked app: public API only ----

const byClientHeader = (context: ExecutionContext) => `client:${String(context.switchToHttp().getRequest().headers['x-client'])}`;

@Controller()
class LoginController {
  constructor(private readonly rateLimits: RateLimitService) {}

  @Post('login')
  @HttpCode(200)
  @RateLimit('3/minute', { key: byClientHeader, bucket: 'login', count: 'failures', blockFor: '15 minutes' })
  async login(@Body() body: { password?: string }, @Headers('x-client') client: string) {
    if (body.password !== 'right') throw new UnauthorizedException();
    await this.rateLimits.reset(`client:${client}`, 'login'); // a good password forgets the failures
    return { ok: true };
  }
}

// ---- the harness ----

const TRIALS = 25;
const rows: Row[] = [];
let redis: ControllableRedis;
let admin: Redis;
beforeAll(async () => {
  redis = await startPrivateRedis();
  admin = redis.client(); // CLIENT PAUSE: server-wide, the private server's
});
afterAll(async () => {
  await redis?.stop();
  report(import.meta.url, rows);
});

const login = (deployment: Deployment, instance: number, client: string, password: string) =>
  send(deployment.instances[instance].port, '/login', { headers: { 'x-client': client }, body: { password } }).answer;

describe.each(HTTP_PLATFORMS)('a reset racing a denial, on %s', (platform) => {
  describe.each(['memory', 'redis'] as const)('%s', (storage) => {
    it(`3. never keeps a stale lockout after the reset: ${TRIALS} trials`, async () => {
      await redis.flush();
      // Both instances: storageTimeout 2000 (a 30 ms pause times nothing out); the block cache is RedisStorage's default: on.
      const deployment = await deploy([LoginController], storage, redis, { platform, module: { storageTimeout: 2_000 } });
      const a = 0;
      const b = deployment.instances.length - 1; // on memory, the one instance plays both parts
      const service = deployment.instances[a].get(RateLimitService);
      let stale = 0;
      let raced = 0; // trials where B's racing check got the lockout: it ran before the reset
      const firstAnswers: number[] = [];
      try {
        for (let n = 0; n < TRIALS; n++) {
          await clearOfBoundary(60_000, 2_000); // the 3 failures and the lockout in one minute
          const client = `${platform}-${storage}-${n}-${Math.random().toString(36).slice(2, 8)}`;
          for (let i = 0; i < 3; i++) expect((await login(deployment, a, client, 'wrong')).status).toBe(401);
          const locked = await login(deployment, a, client, 'wrong');
          expect(locked.status).toBe(429);
          expect(locked.headers['retry-after']).toBe('900');

          if (storage === 'redis') await admin.client('PAUSE', 30, 'ALL');
          // B checks the client while A resets it: A's reset starts 0-6 ms after B's request, so both orders happen
          const check = login(deployment, b, client, 'right');
          const reset = sleep(Math.floor(Math.random() * 7)).then(() => service.reset(`client:${client}`, 'login'));
          const [first] = await Promise.all([check, reset]);
          firstAnswers.push(first.status as number);
          if (first.status === 429) raced++;
          const next = await login(deployment, b, client, 'right'); // 200 once reset; 429: a stale lockout kept
          if (next.status === 429) stale++;
          else expect(next.status).toBe(200);
        }
      } finally {
        await deployment.close();
      }
      rows.push({
        attack: '3. reset racing a denial (3/minute, blockFor 15 min)',
        storage: deployment.label,
        trials: `${TRIALS} trials${storage === 'redis' ? ', CLIENT PAUSE 30 ms' : ''}`,
        measured: `B's next request after A's reset refused (stale lockout)${storage === 'redis' ? '' : '; one instance, no Redis to pause'}`,
        observed: `${stale} stale; race exercised (B's racing check denied) in ${raced} of ${TRIALS}`,
        bound: '0 stale [was 8 of 19]',
        held: stale === 0,
      });
      expect(stale).toBe(0);
      expect(firstAnswers.every((status) => status === 200 || status === 429)).toBe(true);
    }, 60_000);
  });
});
