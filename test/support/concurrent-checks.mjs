// A second (and third) process for concurrency tests: fires `count` checks at once with the
// library's own script and reports how many were admitted. Plain JS, so it needs no build step.
import { Redis } from 'ioredis';

const { url, lua, numKeys, args, count } = JSON.parse(process.argv[2]);
const client = new Redis(url, { enableAutoPipelining: true });
client.defineCommand('rateLimitCheck', { lua });
await client.ping();
process.stdout.write('ready\n');

process.stdin.once('data', async () => {
  const replies = await Promise.all(Array.from({ length: count }, () => client.rateLimitCheck(numKeys, ...args)));
  // reply: per rule allowed, remaining, retry, reset; admitted when every rule allowed
  // the reply ends with the healed keys and their count (none here)
  const admitted = replies.filter((reply) => reply.slice(0, -1).every((value, i) => i % 4 !== 0 || value === 1)).length;
  process.stdout.write(`${JSON.stringify({ admitted })}\n`);
  await client.quit();
  process.exit(0);
});
