// A benchmark phase's progress on stderr (cli-progress), or nothing where progress is off (tests, --json
// runs piped elsewhere still show it: it goes to stderr).
import { SingleBar } from "cli-progress";

export interface PhaseBar {
  increment(): void;
  stop(): void;
}

export function phaseBar(enabled: boolean, label: string, total: number): PhaseBar {
  if (!enabled) return { increment() {}, stop() {} };
  const bar = new SingleBar({ format: `${label} [{bar}] {value}/{total}`, stream: process.stderr });
  bar.start(total, 0);
  return bar;
}
