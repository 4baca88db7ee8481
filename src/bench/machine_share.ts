/**
 * How much of the machine other processes used while the bench ran, from Linux's CPU accounting: the
 * busy time of every CPU (/proc/stat) minus this process's own CPU time and that of its finished
 * children (the PyTorch peer) (/proc/self/stat utime, stime, cutime, cstime). The load average cannot
 * tell this: it counts the bench's own threads, and it lags by a minute.
 *
 * Node-only (reads /proc); elsewhere `readCpuTicks` returns null and the report falls back to the load average.
 */
import fs from 'node:fs';

/** A reading of the CPU counters, in clock ticks. */
export interface CpuTicks {
  /** busy ticks summed over every CPU (user, nice, system, irq, softirq, steal) */
  busy: number;
  /** every tick summed over every CPU */
  total: number;
  /** ticks the hypervisor gave to other guests (steal) */
  steal: number;
  /** this process's own ticks plus those of its waited-for children */
  own: number;
}

/** The counters now, or null where /proc is not there. */
export function readCpuTicks(): CpuTicks | null {
  try {
    const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = cpu as [number, number, number, number, number, number, number, number];
    const total = user + nice + system + idle + iowait + irq + softirq + steal;
    // /proc/self/stat: the command name (field 2) may contain spaces, so split after its closing parenthesis
    const self = fs.readFileSync('/proc/self/stat', 'utf8');
    const fields = self.slice(self.lastIndexOf(')') + 2).split(' ').map(Number);
    const own = fields[11]! + fields[12]! + fields[13]! + fields[14]!; // utime, stime, cutime, cstime (fields 14–17)
    if (![total, own, steal].every(Number.isFinite)) return null;
    return { busy: total - idle - iowait, total, steal, own };
  } catch {
    return null;
  }
}

/** What other processes (and other guests, as steal) used between two readings, as shares of the machine. */
export interface OtherCpu {
  /** CPU time of other processes ÷ (wall time × CPUs), 0–1 */
  share: number;
  /** steal time ÷ (wall time × CPUs), 0–1: the hypervisor running other guests on these CPUs */
  steal_share: number;
}

/** The shares between `start` and `end` (null if either reading is missing). */
export function otherCpu(start: CpuTicks | null, end: CpuTicks | null): OtherCpu | null {
  if (!start || !end || end.total <= start.total) return null;
  const total = end.total - start.total;
  const steal = end.steal - start.steal;
  const others = Math.max(0, end.busy - start.busy - steal - (end.own - start.own));
  return { share: others / total, steal_share: steal / total };
}
