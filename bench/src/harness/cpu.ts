// Where the machine's CPU went during a measured run: the app, this process (the load
// generator), the private redis-server, and everything else. A busy "other" means something
// outside the benchmark competed for the cores and the round is suspect.
import { readFileSync } from 'node:fs';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

interface Snapshot {
  at: number;
  /**
   * Busy ticks of all CPUs together: user, nice, system and steal (a hypervisor's other guests
   * compete too). irq and softirq are left out: loopback networking, the benchmark's own traffic,
   * is charged there rather than to a process.
   */
  busy: number;
  /** Busy ticks of each watched process (user + system). */
  processes: number[];
}

export interface CpuShares {
  /** Percent of one core, over the run. */
  app: number;
  generator: number;
  redis: number;
  other: number;
}

function processTicks(pid: number): number {
  try {
    // fields after the parenthesized command name: state is field 3, utime 14, stime 15
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return NaN; // not Linux, or the process is gone
  }
}

function snapshot(pids: readonly number[]): Snapshot {
  let busy = NaN;
  try {
    const [user, nice, system, , , , , steal] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    busy = user + nice + system + steal;
  } catch {
    // not Linux
  }
  return { at: performance.now(), busy, processes: pids.map(processTicks) };
}

/** Starts watching the app, this process and redis-server; `stop()` returns their shares. */
export function watchCpu(appPid: number, redisPid: number): { stop(): CpuShares } {
  const pids = [appPid, process.pid, redisPid];
  const before = snapshot(pids);
  return {
    stop() {
      const after = snapshot(pids);
      const seconds = (after.at - before.at) / 1_000;
      const pct = (ticks: number) => (100 * ticks) / TICKS_PER_SECOND / seconds;
      const [app, generator, redis] = after.processes.map((t, i) => pct(t - before.processes[i]));
      return { app, generator, redis, other: Math.max(0, pct(after.busy - before.busy) - app - generator - redis) };
    },
  };
}

/** Percent of one core used over `ms` by processes other than this one and `pids`. */
export async function foreignLoad(ms: number, pids: readonly number[]): Promise<number> {
  const watched = [process.pid, ...pids];
  const before = snapshot(watched);
  await new Promise((resolve) => setTimeout(resolve, ms));
  const after = snapshot(watched);
  const seconds = (after.at - before.at) / 1_000;
  const pct = (ticks: number) => (100 * ticks) / TICKS_PER_SECOND / seconds;
  const mine = after.processes.reduce((sum, t, i) => sum + pct(t - before.processes[i]), 0);
  return Math.max(0, pct(after.busy - before.busy) - mine);
}
