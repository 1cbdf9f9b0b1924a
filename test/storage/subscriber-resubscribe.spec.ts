import { RedisStorage } from '../../lib/index.js';
import { startPrivateRedis, type ControllableRedis } from '../support/redis-server.js';
import { until } from '../support/until.js';

/**
 * The block cache's subscriber reconnects after a cut, and subscribes again on 'ready', its answer
 * handled. ioredis would also resubscribe on its own (autoResubscribe), with a SUBSCRIBE nobody
 * awaits: if that one fails, it is an unhandled rejection, which ends a Node app run with the
 * default `--unhandled-rejections=throw`. `npm test` under load saw it as "Connection is
 * closed." when an app closed just after a Redis restart, before Redis answered the SUBSCRIBE.
 * Here the SUBSCRIBE fails for sure: an ACL takes the channels away (which also cuts the
 * subscriber), so every SUBSCRIBE is answered NOPERM.
 */
describe("the block cache's subscriber, resubscribing", () => {
  let redis: ControllableRedis; // ACL SETUSER: server-wide
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  beforeAll(async () => {
    redis = await startPrivateRedis();
    process.on('unhandledRejection', onUnhandled);
  });
  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    await redis?.flush(); // the harness's own client, cut below too, connected again before it quits
    await redis?.stop();
  });

  it('leaves no unhandled rejection when its SUBSCRIBE fails, and listens again once it can', async () => {
    const admin = redis.client();
    const storage = new RedisStorage({ url: redis.url });
    try {
      await storage.init();
      expect(storage.invalidationsReceived).toBe(true);
      const pubsubClients = async () => (String(await admin.client('LIST')).match(/ flags=P /g) ?? []).length;
      expect(await pubsubClients()).toBe(1);

      await admin.call('ACL', 'SETUSER', 'default', 'resetchannels'); // Redis cuts the subscriber
      await until(() => storage.invalidationsReceived === false, 'the subscriber to be cut');
      const refusedBefore = await aclDenials(admin);
      await until(async () => (await aclDenials(admin)) >= refusedBefore + 1, 'a SUBSCRIBE refused after the reconnect');
      await new Promise((resolve) => setTimeout(resolve, 50)); // any rejection left unhandled is reported by now
      expect(unhandled).toEqual([]);
      expect(storage.invalidationsReceived).toBe(false);

      // channels allowed again: the next connection subscribes
      await admin.call('ACL', 'SETUSER', 'default', 'allchannels');
      await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
      await until(() => storage.invalidationsReceived === true, 'the subscriber to listen again');
      expect(unhandled).toEqual([]);
    } finally {
      await admin.call('ACL', 'SETUSER', 'default', 'allchannels');
      await storage.close();
    }
  });
});

/** How many commands ACL has refused so far (channel refusals included). */
async function aclDenials(admin: ReturnType<ControllableRedis['client']>): Promise<number> {
  const entries = (await admin.call('ACL', 'LOG')) as unknown[][];
  let count = 0;
  for (const entry of entries) {
    const fields = entry as unknown[];
    const at = fields.indexOf('count');
    count += at >= 0 ? Number(fields[at + 1]) : 1;
  }
  return count;
}
