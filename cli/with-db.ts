// Runs a command's work against DATABASE_URL (default: the embedded PGlite under .luminet/), once it is
// migrated (else it says to run `luminet migrate`), closing the database afterwards; withDb also reports a
// failure as "luminet <command>: <message>" with exit code 1.
import { requireMigrated } from "../db/migrate.ts";
import { type Db, defaultDatabaseUrl, describeDatabaseUrl, openDb } from "../db/open.ts";
import { runCommand } from "./run-command.ts";

export async function usingDb<T>(run: (db: Db) => Promise<T>): Promise<T> {
  const url = process.env.DATABASE_URL || defaultDatabaseUrl();
  const db = await openDb(url);
  try {
    await requireMigrated(db, describeDatabaseUrl(url));
    return await run(db);
  } finally {
    await db.close();
  }
}

export function withDb(command: string, run: (db: Db) => Promise<void>): Promise<void> {
  return runCommand(command, () => usingDb(run));
}
