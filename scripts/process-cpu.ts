// CPU time of another process, for benchmarks that say which process an overhead goes to.
import { readFileSync } from "node:fs";

/** User + system CPU seconds the process `pid` used so far; null where /proc cannot tell (not Linux, gone). */
export function cpuSecondsOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime, fields 14 and 15 of proc(5), in USER_HZ ticks (100 on Linux).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}
