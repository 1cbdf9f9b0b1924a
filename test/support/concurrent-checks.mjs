// A second (and third) process for concurrency tests: fires `count` checks at once with the
// library's own script and reports how many were admitted. Plain JS, so it needs no build step.
import { Redis } from 'ioredis';

const { url, lua, numKeys, args, count } = JSON.parse(process.argv[2]);
const client = new Redis(url, { enableAutoPipelining: true });
client.defineCommand('rateLimitCheck', { lua });
await client.ping();
process.stdout.write('ready\n');

process.stdin.once('data', async () => {
  const replies = await Promise.all(Array.from({ length: count }, () => client.rateLimitCheckBuffer(numKeys, ...args)));
  // reply[0]: per rule 25 bytes, the first of them `allowed`; admitted when every rule allowed
  const admitted = replies.filter(([records]) => records.every((value, i) => i % 25 !== 0 || value === 1)).length;
  process.stdout.write(`${JSON.stringify({ admitted })}\n`);
  await client.quit();
  process.exit(0);
});
