import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, type ClusterOptions } from 'ioredis';
import {
  adminCommand,
  exited,
  freePorts,
  infoFields,
  killProcess,
  logTail,
  PortTakenError,
  probe,
  requireRedisBinaries,
  startRedisProcess,
  waitUntil,
} from './redis-nodes.js';

/**
 * A real Redis Cluster for one test file: 3 masters and 3 replicas, each a `redis-server` on
 * free ports in its own temp dir. Every readiness check polls the nodes over raw sockets.
 */

export interface ClusterNode {
  readonly port: number;
  /** The cluster bus port, set explicitly: port + 10000 may not exist for high free ports. */
  readonly busPort: number;
  readonly dir: string;
  /** The node id, from its own CLUSTER NODES line. */
  id: string;
  /** The role the node last reported; refreshed at start and by waitForFailover/restart. */
  role: 'master' | 'replica';
  /** For a replica, the id of its master. */
  masterId?: string;
  process: ChildProcess;
  /** False from killMaster until restart. */
  alive: boolean;
}

export interface TestCluster {
  readonly nodes: readonly ClusterNode[];
  readonly ports: readonly number[];
  /** Live masters, as last refreshed. */
  masters(): ClusterNode[];
  /** Live replicas, as last refreshed. */
  replicas(): ClusterNode[];
  /** A new ioredis Cluster on the live nodes; closed by `stop()` unless closed before. */
  client(options?: ClusterOptions): Cluster;
  /** FLUSHALL on every live master. */
  flush(): Promise<void>;
  /** The master now serving `key`'s slot (asked of the nodes, not of a client's cache). */
  masterOf(key: string): Promise<ClusterNode>;
  /**
   * Resolves once every live replica has all the writes its master had when this was called:
   * before a killMaster, so the promoted replica holds the state a test wrote. (WAIT would need
   * the very connection that wrote, which a Cluster client does not expose per slot.)
   */
  waitForReplicas(timeoutMs?: number): Promise<void>;
  /**
   * SIGKILLs a master (the given node, the master now serving `{ key }`, or else the first live
   * master) and resolves once its process is gone: no graceful shutdown, no failover handshake.
   * Call `waitForReplicas()` first if the replica must hold what was written. Until
   * `waitForFailover()` resolves, clients see connection errors and CLUSTERDOWN for that
   * master's slots, which is what a test of a failure policy wants. One master at a time: a
   * failover needs a majority of masters alive to vote, and a master promoted earlier has no
   * replica until the killed node is `restart()`ed.
   */
  killMaster(target?: ClusterNode | { key: string }): Promise<ClusterNode>;
  /**
   * Resolves once a replica of every killed master was promoted and every live node agrees:
   * the killed nodes are FAIL, all 16384 slots are served, cluster_state is ok. Typically 2-4 s
   * with the 1 s node timeout. Returns the promoted nodes (roles in `nodes` are refreshed).
   */
  waitForFailover(timeoutMs?: number): Promise<ClusterNode[]>;
  /** Starts a killed node again on its ports and nodes.conf; it rejoins as a replica. */
  restart(node: ClusterNode, timeoutMs?: number): Promise<void>;
  /** Closes tracked clients, kills every node, removes the temp dirs. */
  stop(): Promise<void>;
}

const NODES = 6;
const SLOTS = 16384;
const READY_TIMEOUT_MS = 20_000;

export async function startCluster(): Promise<TestCluster> {
  requireRedisBinaries('The Redis Cluster tests');
  const nodes: ClusterNode[] = [];
  const clients: Cluster[] = [];
  const stop = async () => {
    await Promise.all(clients.map(closeCluster));
    await Promise.all(nodes.map((node) => killProcess(node.process)));
    for (const node of nodes) rmSync(node.dir, { recursive: true, force: true });
  };

  try {
    await startNodes(nodes);
    await createCluster(nodes);
    await waitForSettled(nodes, READY_TIMEOUT_MS, { replicasPerMaster: 1 });
  } catch (error) {
    await stop();
    throw error;
  }

  const live = () => nodes.filter((node) => node.alive);
  const masterOf = async (key: string) => {
    const slot = Number(await adminCommand(live()[0].port, ['CLUSTER', 'KEYSLOT', key]));
    for (const node of live()) {
      const self = await selfView(node.port);
      if (self?.role === 'master' && self.slots.some(([from, to]) => from <= slot && slot <= to)) return node;
    }
    throw new Error(`no live master serves slot ${slot} of "${key}"`);
  };

  return {
    nodes,
    ports: nodes.map((node) => node.port),
    masters: () => live().filter((node) => node.role === 'master'),
    replicas: () => live().filter((node) => node.role === 'replica'),
    client: (options = {}) => {
      const client = new Cluster(
        live().map((node) => ({ host: '127.0.0.1', port: node.port })),
        // a 2-core machine running Jest can be slower than the 1 s default
        { slotsRefreshTimeout: 3_000, ...options },
      );
      clients.push(client);
      return client;
    },
    flush: async () => {
      for (const node of live()) {
        if ((await selfView(node.port))?.role === 'master') await adminCommand(node.port, ['FLUSHALL']);
      }
    },
    masterOf,
    waitForReplicas: async (timeoutMs = READY_TIMEOUT_MS) => {
      const targets = await Promise.all(
        live()
          .filter((node) => node.role === 'replica' && nodeById(nodes, node.masterId)?.alive)
          .map(async (replica) => {
            const master = nodeById(nodes, replica.masterId)!;
            const info = infoFields(await adminCommand(master.port, ['INFO', 'replication']));
            return { replica, offset: Number(info.master_repl_offset) };
          }),
      );
      for (const { replica, offset } of targets) {
        await waitUntil(`replica ${replica.port} to reach offset ${offset}`, async () => {
          const info = infoFields(await probe(replica.port, ['INFO', 'replication']));
          return info.master_link_status === 'up' && Number(info.slave_repl_offset) >= offset;
        }, timeoutMs);
      }
    },
    killMaster: async (target) => {
      let node: ClusterNode | undefined;
      if (!target) node = live().find((n) => n.role === 'master');
      else if ('key' in target) node = await masterOf(target.key);
      else node = target;
      if (!node || !node.alive || node.role !== 'master') throw new Error('killMaster needs a live master');
      node.alive = false;
      await killProcess(node.process);
      return node;
    },
    waitForFailover: async (timeoutMs = READY_TIMEOUT_MS) => {
      const orphans = nodes.filter((node) => node.alive && node.role === 'replica' && !nodeById(nodes, node.masterId)?.alive);
      await waitForSettled(nodes, timeoutMs, { replicasPerMaster: 0 });
      return orphans.filter((node) => node.role === 'master');
    },
    restart: async (node, timeoutMs = READY_TIMEOUT_MS) => {
      if (node.alive) throw new Error(`node ${node.port} is running`);
      node.process = (await startRedisProcess(node.port, node.dir, nodeArgs(node.port, node.busPort, node.dir))).process;
      node.alive = true;
      await waitForSettled(nodes, timeoutMs, { replicasPerMaster: 0 });
    },
    stop,
  };
}

/**
 * Quits a Cluster client and waits for its sockets to close, so Jest finds no open handle.
 * A client stuck mid-failover is cut after 2 s rather than hanging the test.
 */
export async function closeCluster(client: Cluster): Promise<void> {
  if (client.status === 'end') return;
  let cutoff: NodeJS.Timeout | undefined;
  const ended = new Promise<void>((resolve) => {
    client.once('end', () => resolve());
    cutoff = setTimeout(() => {
      client.disconnect();
      setTimeout(resolve, 100);
    }, 2_000);
  });
  if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
  else client.disconnect();
  await ended;
  clearTimeout(cutoff);
}

function nodeArgs(port: number, busPort: number, dir: string): string[] {
  return [
    '--port', String(port),
    '--cluster-port', String(busPort),
    '--cluster-enabled', 'yes',
    '--cluster-config-file', 'nodes.conf',
    '--cluster-node-timeout', '1000',
    // a replica may always take over, however long since it heard from its master
    '--cluster-replica-validity-factor', '0',
    // replicas sync at once instead of after the default 5 s
    '--repl-diskless-sync-delay', '0',
    '--save', '',
    '--appendonly', 'no',
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--logfile', 'redis.log',
  ];
}

/** Starts 6 nodes; retried on new ports if another process took one after freePorts. */
async function startNodes(nodes: ClusterNode[]): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const ports = await freePorts(NODES * 2);
    const started = await Promise.allSettled(
      Array.from({ length: NODES }, async (_, i) => {
        const [port, busPort] = [ports[i], ports[NODES + i]];
        const dir = mkdtempSync(join(tmpdir(), `rl-cluster-${port}-`));
        try {
          const { process } = await startRedisProcess(port, dir, nodeArgs(port, busPort, dir));
          return { port, busPort, dir, id: '', role: 'master', process, alive: true } satisfies ClusterNode;
        } catch (error) {
          rmSync(dir, { recursive: true, force: true });
          throw error;
        }
      }),
    );
    const failures = started.flatMap((s) => (s.status === 'rejected' ? [s.reason as Error] : []));
    const ok = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    if (failures.length === 0) {
      nodes.push(...ok);
      return;
    }
    await Promise.all(ok.map((node) => killProcess(node.process)));
    for (const node of ok) rmSync(node.dir, { recursive: true, force: true });
    if (attempt === 3 || !failures.every((f) => f instanceof PortTakenError)) throw failures[0];
  }
}

async function createCluster(nodes: ClusterNode[]): Promise<void> {
  const args = ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes'];
  await new Promise<void>((resolve, reject) => {
    const cli = spawn('redis-cli', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    cli.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
    cli.stderr.on('data', (chunk: Buffer) => (text += chunk.toString()));
    const timer = setTimeout(() => cli.kill('SIGKILL'), 30_000);
    cli.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    cli.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0 && text.includes('All 16384 slots covered')) resolve();
      else reject(new Error(`redis-cli ${args.join(' ')} failed (exit ${code}):\n${text}`));
    });
  });
}

interface NodeLine {
  id: string;
  port: number;
  flags: string[];
  role: 'master' | 'replica';
  masterId?: string;
  slots: [number, number][];
}

/** One node's CLUSTER NODES, parsed; undefined when it does not answer. */
async function clusterView(port: number): Promise<NodeLine[] | undefined> {
  const text = await probe(port, ['CLUSTER', 'NODES']);
  if (typeof text !== 'string') return undefined;
  return text
    .trim()
    .split('\n')
    .map((line) => {
      const [id, address, flagList, master, , , , , ...slotFields] = line.trim().split(' ');
      const flags = flagList.split(',');
      return {
        id,
        port: Number(/:(\d+)@/.exec(address)?.[1]),
        flags,
        role: flags.includes('slave') ? 'replica' : 'master',
        masterId: master === '-' ? undefined : master,
        // "[slot->-id]" fields are slots being migrated, not served
        slots: slotFields
          .filter((field) => !field.startsWith('['))
          .map((field) => {
            const [from, to = from] = field.split('-').map(Number);
            return [from, to] as [number, number];
          }),
      };
    });
}

async function selfView(port: number): Promise<NodeLine | undefined> {
  return (await clusterView(port))?.find((line) => line.flags.includes('myself'));
}

function nodeById(nodes: readonly ClusterNode[], id: string | undefined): ClusterNode | undefined {
  return nodes.find((node) => node.id === id);
}

/**
 * Waits until the cluster is in a state tests can rely on, then records each node's id and
 * role. Every live node must report cluster_state:ok with all slots ok, know every node, agree
 * with every other live node on who is master, see dead nodes as FAIL (not just suspected), and
 * each live replica must have its replication link up.
 */
async function waitForSettled(nodes: ClusterNode[], timeoutMs: number, expect: { replicasPerMaster: number }): Promise<void> {
  let problem = '';
  await waitUntil(
    'the cluster to settle',
    async () => {
      problem = await unsettled(nodes, expect.replicasPerMaster);
      return problem === '';
    },
    timeoutMs,
    () => `Last problem: ${problem}. Logs: ${nodes.map((n) => `[${n.port}] ${logTail(n.dir, 3)}`).join(' ')}`,
  );
  for (const node of nodes.filter((n) => n.alive)) {
    const self = (await selfView(node.port))!;
    Object.assign(node, { id: self.id, role: self.role, masterId: self.masterId });
  }
}

/** What is not settled yet, or '' when all is well. */
async function unsettled(nodes: ClusterNode[], replicasPerMaster: number): Promise<string> {
  const live = nodes.filter((node) => node.alive);
  for (const node of live) if (exited(node.process)) return `node ${node.port} exited: ${logTail(node.dir)}`;
  const views = new Map<number, NodeLine[]>();
  for (const node of live) {
    const info = infoFields(await probe(node.port, ['CLUSTER', 'INFO']));
    if (info.cluster_state !== 'ok') return `node ${node.port} has cluster_state ${info.cluster_state}`;
    if (Number(info.cluster_slots_ok) !== SLOTS) return `node ${node.port} has ${info.cluster_slots_ok} slots ok`;
    if (Number(info.cluster_known_nodes) !== nodes.length) return `node ${node.port} knows ${info.cluster_known_nodes} nodes`;
    const view = await clusterView(node.port);
    if (!view) return `node ${node.port} does not answer CLUSTER NODES`;
    views.set(node.port, view);
  }
  const selves = new Map(live.map((node) => [node.port, views.get(node.port)!.find((l) => l.flags.includes('myself'))!]));
  const deadPorts = new Set(nodes.filter((node) => !node.alive).map((node) => node.port));
  for (const [port, view] of views) {
    for (const line of view) {
      if (deadPorts.has(line.port)) {
        if (!line.flags.includes('fail')) return `node ${port} does not yet see dead node ${line.port} as FAIL`;
        continue;
      }
      const self = selves.get(line.port);
      if (!self) return `node ${port} lists unknown node ${line.port}`;
      if (line.flags.some((f) => ['fail', 'fail?', 'handshake', 'noaddr'].includes(f))) {
        return `node ${port} flags ${line.port} ${line.flags.join(',')}`;
      }
      if (line.role !== self.role || line.masterId !== self.masterId) return `node ${port} has stale role of ${line.port}`;
    }
  }
  for (const node of live) {
    const self = selves.get(node.port)!;
    const replication = infoFields(await probe(node.port, ['INFO', 'replication']));
    if (self.role === 'replica' && replication.master_link_status !== 'up') return `replica ${node.port} link is ${replication.master_link_status}`;
    if (self.role === 'master' && self.slots.length > 0 && Number(replication.connected_slaves ?? 0) < replicasPerMaster) {
      return `master ${node.port} has ${replication.connected_slaves} replicas`;
    }
  }
  return '';
}
