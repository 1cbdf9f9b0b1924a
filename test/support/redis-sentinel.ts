import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis, type RedisOptions } from 'ioredis';
import { closeClient } from './redis-server.js';
import {
  adminCommand,
  freePorts,
  infoFields,
  killProcess,
  logTail,
  PortTakenError,
  probe,
  requireRedisBinaries,
  startRedisProcess,
  waitUntil,
  type RawReply,
  type RedisProcess,
} from './redis-nodes.js';

/**
 * Redis with Sentinel for one test file: a master, one replica and one sentinel (quorum 1),
 * each a `redis-server` on a free port in its own temp dir.
 */
export interface TestSentinel {
  readonly masterName: string;
  /** Where clients find the sentinel. */
  readonly sentinel: { readonly host: string; readonly port: number };
  /** The two data nodes; which one is master changes with `failover()`. */
  readonly ports: readonly [number, number];
  /** The port of the master, as the sentinel reports it now. */
  masterPort(): Promise<number>;
  /** A new ioredis client that finds the master through the sentinel; closed by `stop()`. */
  client(options?: RedisOptions): Redis;
  /** Resolves once the replica has every write the master had when this was called. */
  waitForReplica(timeoutMs?: number): Promise<void>;
  /**
   * `SENTINEL FAILOVER`, then waits until the sentinel names the former replica as master and
   * every open tracked client writes to it (about 1 s). The sentinel demotes the former master
   * only at its next INFO, ~10 s later; a second failover waits for that first.
   */
  failover(timeoutMs?: number): Promise<{ from: number; to: number }>;
  stop(): Promise<void>;
}

const MASTER_NAME = 'mymaster';
const READY_TIMEOUT_MS = 20_000;

export async function startSentinel(): Promise<TestSentinel> {
  requireRedisBinaries('The Redis Sentinel tests', ['redis-server']);
  const processes: RedisProcess[] = [];
  const dirs: string[] = [];
  const clients: Redis[] = [];
  const stop = async () => {
    await Promise.all(clients.map(closeSentinelClient));
    await Promise.all(processes.map((p) => killProcess(p.process)));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  };

  let ports: number[] = [];
  try {
    for (let attempt = 1; ; attempt++) {
      ports = await freePorts(3);
      try {
        await startNodes(ports, processes, dirs);
        break;
      } catch (error) {
        await Promise.all(processes.splice(0).map((p) => killProcess(p.process)));
        for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
        if (attempt === 3 || !(error instanceof PortTakenError)) throw error;
      }
    }
  } catch (error) {
    await stop();
    throw error;
  }

  const [first, second, sentinelPort] = ports;
  const log = (port: number) => logTail(processes.find((p) => p.port === port)!.dir);
  const masterPort = async () => {
    const reply = await adminCommand(sentinelPort, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME]);
    return Number((reply as string[])[1]);
  };
  const waitForReplica = async (timeoutMs = READY_TIMEOUT_MS) => {
    const master = await masterPort();
    const replica = master === first ? second : first;
    const target = Number(infoFields(await adminCommand(master, ['INFO', 'replication'])).master_repl_offset);
    await waitUntil(`replica ${replica} to reach offset ${target}`, async () => {
      const info = infoFields(await probe(replica, ['INFO', 'replication']));
      return info.master_link_status === 'up' && Number(info.slave_repl_offset) >= target;
    }, timeoutMs);
  };

  return {
    masterName: MASTER_NAME,
    sentinel: { host: '127.0.0.1', port: sentinelPort },
    ports: [first, second],
    masterPort,
    client: (options = {}) => {
      const client = new Redis({
        sentinels: [{ host: '127.0.0.1', port: sentinelPort }],
        name: MASTER_NAME,
        // Move on the sentinel's +switch-master: the sentinel demotes the old master only at its
        // next INFO, ~10 s later, and until then that master still takes (soon lost) writes.
        failoverDetector: true,
        // a demoted master answers READONLY: reconnect through the sentinel at once
        reconnectOnError: (error) => error.message.startsWith('READONLY'),
        ...options,
      });
      // ioredis reports each of its own sentinel retries as an 'error' event; commands still fail
      client.on('error', (error: Error) => {
        if (!error.message.startsWith('All sentinels are unreachable. Retrying')) console.warn(`sentinel client: ${error.message}`);
      });
      clients.push(client);
      return client;
    },
    waitForReplica,
    failover: async (timeoutMs = READY_TIMEOUT_MS) => {
      const from = await masterPort();
      const to = from === first ? second : first;
      // after an earlier failover, the sentinel demotes the old master only at its next INFO (~10 s)
      await waitForFailoverReady(sentinelPort, from, to, timeoutMs, () => log(sentinelPort));
      await adminCommand(sentinelPort, ['SENTINEL', 'FAILOVER', MASTER_NAME]);
      await waitUntil(
        `the sentinel to promote ${to}`,
        async () => (await probe(sentinelPort, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME]) as RawReply[] | undefined)?.[1] === String(to),
        timeoutMs,
        () => `Sentinel log: ${log(sentinelPort)}`,
      );
      // A client may still sit on the old master; a write that lands on the new one proves it moved.
      let probeId = 0;
      for (const client of clients.filter((c) => c.status !== 'end')) {
        await waitUntil(
          'a client to write to the new master',
          async () => {
            const key = `failover-probe:${++probeId}`;
            const written = await client.set(key, 'x').then(() => true, () => false);
            const landed = written && (await probe(to, ['GET', key])) === 'x';
            await probe(to, ['DEL', key]);
            return landed;
          },
          timeoutMs,
        );
      }
      return { from, to };
    },
    stop,
  };
}

/**
 * QUIT, then disconnect(): QUIT alone leaves ioredis's failover detector subscribed to the
 * sentinel (only disconnect() cleans it up), which keeps the process alive.
 */
export async function closeSentinelClient(client: Redis): Promise<void> {
  await closeClient(client);
  client.disconnect();
}

function dataNodeArgs(port: number, dir: string): string[] {
  // replicas sync at once instead of after the default 5 s
  return ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--repl-diskless-sync-delay', '0',
    '--dir', dir, '--logfile', 'redis.log'];
}

async function replicatesFrom(port: number, masterPort: number): Promise<boolean> {
  const info = infoFields(await probe(port, ['INFO', 'replication']));
  return info.role === 'slave' && info.master_port === String(masterPort) && info.master_link_status === 'up';
}

/** Master, then replica (once in sync), then the sentinel (once it sees a replica fit for failover). */
async function startNodes([masterPort, replicaPort, sentinelPort]: number[], processes: RedisProcess[], dirs: string[]): Promise<void> {
  const dir = (name: string) => {
    const path = mkdtempSync(join(tmpdir(), `rl-sentinel-${name}-`));
    dirs.push(path);
    return path;
  };
  const masterDir = dir('master');
  processes.push(await startRedisProcess(masterPort, masterDir, dataNodeArgs(masterPort, masterDir)));
  const replicaDir = dir('replica');
  processes.push(
    await startRedisProcess(replicaPort, replicaDir, [...dataNodeArgs(replicaPort, replicaDir), '--replicaof', '127.0.0.1', String(masterPort)]),
  );
  // the sentinel lists replicas from the master's INFO, which it asks again only every 10 s
  await waitUntil(`replica ${replicaPort} to sync`, () => replicatesFrom(replicaPort, masterPort), READY_TIMEOUT_MS, () => logTail(replicaDir));

  const sentinelDir = dir('sentinel');
  // the sentinel rewrites its config file, so it lives in the temp dir
  const config = join(sentinelDir, 'sentinel.conf');
  writeFileSync(
    config,
    [
      `port ${sentinelPort}`,
      'bind 127.0.0.1',
      `dir ${sentinelDir}`,
      'logfile "redis.log"',
      `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${masterPort} 1`,
      `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
      `sentinel failover-timeout ${MASTER_NAME} 5000`,
      '',
    ].join('\n'),
  );
  processes.push(await startRedisProcess(sentinelPort, sentinelDir, [config, '--sentinel']));
  await waitForFailoverReady(sentinelPort, masterPort, replicaPort, READY_TIMEOUT_MS, () => logTail(sentinelDir));
}

/**
 * Waits until `replica` replicates from `master` and the sentinel has seen it healthy: before
 * that, SENTINEL FAILOVER refuses with NOGOODSLAVE.
 */
async function waitForFailoverReady(sentinelPort: number, master: number, replica: number, timeoutMs: number, log: () => string): Promise<void> {
  await waitUntil(
    `replica ${replica} to sync from ${master} and the sentinel to see it`,
    async () => {
      if (!(await replicatesFrom(replica, master))) return false;
      const replicas = await probe(sentinelPort, ['SENTINEL', 'REPLICAS', MASTER_NAME]);
      return Array.isArray(replicas) && replicas.some((r) => {
        const fields = pairs(r);
        return fields.port === String(replica) && fields.flags === 'slave' && fields['master-link-status'] === 'ok';
      });
    },
    timeoutMs,
    () => `Sentinel log: ${log()}`,
  );
}

/** A flat [name, value, ...] reply as an object. */
function pairs(reply: RawReply): Record<string, string> {
  const fields: Record<string, string> = {};
  if (!Array.isArray(reply)) return fields;
  for (let i = 0; i + 1 < reply.length; i += 2) fields[String(reply[i])] = String(reply[i + 1]);
  return fields;
}
