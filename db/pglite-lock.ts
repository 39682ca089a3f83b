// PGlite runs Postgres inside one process: a second process that opens the same data folder neither sees
// the first one's writes nor keeps its own (they are lost, then it aborts). So a process that opens a
// folder takes a lock file in it, and another is refused with who holds it. A lock whose process is gone
// (killed) is taken over.
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";

const LOCK_FILE = "luminet.lock";

/** Another process (or this one, a second time) has the PGlite folder open. */
export class DatabaseInUseError extends Error {
  override name = "DatabaseInUseError";
}

/** Locks the PGlite data folder for this process; returns the release. Throws DatabaseInUseError. */
export function lockPgliteFolder(dataDir: string): () => void {
  const path = join(dataDir, LOCK_FILE);
  for (let attempt = 0; ; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, "wx");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw error;
      const holder = Number.parseInt(readFileSync(path, "utf8"), 10);
      if (isRunning(holder)) {
        throw new DatabaseInUseError(
          `the PGlite database in ${dataDir} is open in process ${holder} (a luminet dev?), and PGlite serves ` +
            "one process at a time: stop that process first, or use a PostgreSQL DATABASE_URL for both " +
            `(if no such process runs Luminet, delete ${path})`,
        );
      }
      unlinkSync(path);
      continue;
    }
    writeSync(fd, `${process.pid}\n`);
    closeSync(fd);
    return () => {
      try {
        if (Number.parseInt(readFileSync(path, "utf8"), 10) === process.pid) unlinkSync(path);
      } catch {
        // Gone already: nothing to release.
      }
    };
  }
}

function isRunning(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it runs, as another user.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
