// Realistic traffic on the sample app's GET /quotes/:symbol, for the limit advisor to learn from
// (docs/sample-app.md, "Choosing limits: the advisor"). Plain Node, no dependencies:
//
//   npm start                                    # in another terminal: the sample app on :3000
//   node bench/advisor-traffic.mjs --seconds 20
//
// The clients: 200 light ones (1-20 requests a minute each, log-normal: most ask for a few), 5 heavy
// ones (80-150 a minute) and one abuser (600 a minute), each arriving at random (Poisson) at its
// own rate. The quotes count anonymous clients by address (`ip:<address>`; the API's only other
// identity is a paid user's Bearer token, of which the demo has one), so each simulated client
// connects from an address of its own on the loopback network: Linux routes all of 127.0.0.0/8
// to `lo`. Light clients are 127.0.1.x, heavy ones 127.0.2.x, the abuser 127.0.3.1.
//
// The same seed gives the same clients, the same rates and the same schedule of requests.
// At most --concurrency requests are in flight (16 by default), over keep-alive connections; it
// stops by itself after --seconds, and on Ctrl-C, and prints what it sent and what came back.
import { Agent, request } from 'node:http';
import { parseArgs } from 'node:util';

const USAGE = `Usage: node bench/advisor-traffic.mjs [options]

  --url <url>            The sample app, on a loopback address (default http://127.0.0.1:3000).
  --seconds <n>          How long to send, in seconds (default 20).
  --seed <n>             The seed of the clients and the schedule (default 21).
  --concurrency <n>      Most requests in flight at once, 1-64 (default 16).
  --light <n>            Light clients (default 200), 1-20 requests a minute each.
  --heavy <n>            Heavy clients (default 5), 80-150 a minute each.
  --abusers <n>          Abusers (default 1), 600 a minute each.
  -h, --help             This help.`;

const SYMBOLS = ['AAPL', 'MSFT', 'GOOG', 'AMZN', 'NVDA', 'TSLA', 'IBM', 'ACME'];
const REQUEST_TIMEOUT_MS = 10_000;

const args = readArguments(process.argv.slice(2));
if (args === 'help') {
  console.log(USAGE);
  process.exit(0);
}

const random = mulberry32(args.seed);
const clients = makeClients(random, args);
const plan = schedule(random, clients, args.seconds * 1000);
console.log(
  `advisor-traffic: ${clients.length} clients (${args.light} light, ${args.heavy} heavy, ${args.abusers} abuser${args.abusers === 1 ? '' : 's'}), ` +
    `${plan.length} requests planned over ${args.seconds} s (seed ${args.seed}), at most ${args.concurrency} in flight, to ${args.base}/quotes/:symbol`,
);

const stats = new Map(['light', 'heavy', 'abuser'].map((kind) => [kind, { clients: 0, sent: 0, ok: 0, limited: 0, other: 0, errors: 0 }]));
for (const client of clients) stats.get(client.kind).clients++;
const otherStatuses = new Map();
let firstError;
let late = 0;
let stopped = false;
process.once('SIGINT', () => {
  stopped = true;
  console.log('\nadvisor-traffic: interrupted; waiting for the requests in flight');
});

const started = performance.now();
await run();
const elapsed = (performance.now() - started) / 1000;
for (const client of clients) client.agent.destroy();
report(elapsed);

/** Sends the plan in time order, at most `concurrency` at once; a request due while all are busy waits (and counts as late past 1 s). */
async function run() {
  let next = 0;
  const worker = async () => {
    while (!stopped && next < plan.length) {
      const entry = plan[next++];
      const wait = entry.at - (performance.now() - started);
      if (wait > 0) await sleep(wait);
      else if (wait < -1_000) late++;
      if (stopped) return;
      await send(entry);
    }
  };
  await Promise.all(Array.from({ length: args.concurrency }, worker));
}

function send({ client, symbol }) {
  const counts = stats.get(client.kind);
  counts.sent++;
  client.sent++;
  return new Promise((resolve) => {
    const req = request(
      { host: args.host, port: args.port, path: `${args.path}/quotes/${symbol}`, agent: client.agent, localAddress: client.address, headers: { accept: 'application/json' } },
      (response) => {
        response.resume();
        response.on('end', () => {
          const status = response.statusCode;
          if (status === 200) counts.ok++;
          else if (status === 429) (counts.limited++, client.limited++);
          else (counts.other++, otherStatuses.set(status, (otherStatuses.get(status) ?? 0) + 1));
          resolve();
        });
        response.on('error', () => (counts.errors++, resolve()));
      },
    );
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)));
    req.on('error', (error) => {
      counts.errors++;
      firstError ??= error;
      resolve();
    });
    req.end();
  });
}

function report(seconds) {
  const rows = [['class', 'clients', 'sent', '200', '429', 'other', 'errors']];
  const total = { clients: 0, sent: 0, ok: 0, limited: 0, other: 0, errors: 0 };
  for (const [kind, counts] of stats) {
    rows.push([kind, ...Object.values(counts).map(String)]);
    for (const key of Object.keys(total)) total[key] += counts[key];
  }
  rows.push(['total', ...Object.values(total).map(String)]);
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  console.log(`\nSent ${total.sent} requests in ${seconds.toFixed(1)} s (${(total.sent / seconds).toFixed(1)}/s):`);
  for (const row of rows) console.log(`  ${row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column]))).join('   ')}`);
  if (otherStatuses.size > 0) console.log(`  other statuses: ${[...otherStatuses].map(([status, count]) => `${status} x${count}`).join(', ')}`);
  if (firstError) console.log(`  first error: ${firstError.message}`);
  if (late > 0) console.log(`  ${late} requests went out more than 1 s late: the app (or this machine) could not keep up`);
  const heaviest = clients.filter((client) => client.kind !== 'light').sort((a, b) => b.sent - a.sent);
  console.log('\nThe heavy clients and abusers, as the advisor names them:');
  for (const client of heaviest) {
    console.log(`  ip:${client.address.padEnd(11)}  ${client.kind.padEnd(6)}  ${String(Math.round(client.perMinute)).padStart(3)}/minute   sent ${client.sent}, 429 ${client.limited}`);
  }
  console.log('\nThe light clients are ip:127.0.1.1 to ip:127.0.1.' + args.light + '.');
}

/** The clients, their addresses and their rates (requests a minute). */
function makeClients(next, { light, heavy, abusers }) {
  const made = [];
  const add = (kind, subnet, index, perMinute) => {
    const address = `127.0.${subnet}.${index + 1}`;
    // one keep-alive connection or two per client, from its own address
    made.push({ kind, address, perMinute, sent: 0, limited: 0, agent: new Agent({ keepAlive: true, maxSockets: 2, localAddress: address }) });
  };
  // log-normal around 4 a minute: most light clients ask for a few quotes, a few for up to 20
  for (let i = 0; i < light; i++) add('light', 1, i, Math.min(20, Math.max(1, Math.exp(Math.log(4) + 0.8 * gaussian(next)))));
  for (let i = 0; i < heavy; i++) add('heavy', 2, i, 80 + next() * 70);
  for (let i = 0; i < abusers; i++) add('abuser', 3, i, 600);
  return made;
}

/** Every request of the run, in time order: each client's arrivals a Poisson process at its rate. */
function schedule(next, all, durationMs) {
  const entries = [];
  for (const client of all) {
    const meanGap = 60_000 / client.perMinute;
    for (let at = exponential(next) * meanGap; at < durationMs; at += exponential(next) * meanGap) {
      entries.push({ at, client, symbol: SYMBOLS[Math.floor(next() * SYMBOLS.length)] });
    }
  }
  return entries.sort((a, b) => a.at - b.at);
}

function readArguments(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        url: { type: 'string', default: 'http://127.0.0.1:3000' },
        seconds: { type: 'string', default: '20' },
        seed: { type: 'string', default: '21' },
        concurrency: { type: 'string', default: '16' },
        light: { type: 'string', default: '200' },
        heavy: { type: 'string', default: '5' },
        abusers: { type: 'string', default: '1' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (error) {
    fail(error.message);
  }
  if (parsed.help) return 'help';
  let url;
  try {
    url = new URL(parsed.url);
  } catch {
    fail(`--url must be a URL such as http://127.0.0.1:3000, got ${JSON.stringify(parsed.url)}`);
  }
  if (url.protocol !== 'http:') fail(`--url must be http://, got ${url.protocol}`);
  // load goes to this machine only; the clients' addresses are IPv4 loopback ones, so the app must be reached over IPv4
  const host = url.hostname === 'localhost' ? '127.0.0.1' : url.hostname;
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)) fail(`--url must be on an IPv4 loopback address (127.0.0.1, or localhost), got ${url.hostname}`);
  const number = (name, min, max) => {
    const value = Number(parsed[name]);
    if (!Number.isInteger(value) || value < min || value > max) fail(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(parsed[name])}`);
    return value;
  };
  return {
    base: `http://${host}:${url.port || 80}${url.pathname.replace(/\/+$/, '')}`,
    host,
    port: Number(url.port || 80),
    path: url.pathname.replace(/\/+$/, ''),
    seconds: number('seconds', 1, 3_600),
    seed: number('seed', 0, 2 ** 32 - 1),
    concurrency: number('concurrency', 1, 64),
    light: number('light', 0, 254),
    heavy: number('heavy', 0, 254),
    abusers: number('abusers', 0, 254),
  };
}

function fail(message) {
  console.error(`advisor-traffic: ${message}\n\n${USAGE}`);
  process.exit(2);
}

/** A small seeded generator (mulberry32): floats in [0, 1). */
function mulberry32(seed) {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A standard normal draw (Box-Muller). */
function gaussian(next) {
  return Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
}

/** An exponential draw of mean 1: the gap between two Poisson arrivals, in mean gaps. */
function exponential(next) {
  return -Math.log(1 - next());
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
