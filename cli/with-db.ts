// Runs a command's work against DATABASE_URL (default: the embedded PGlite under .luminet/), closing the
// database afterwards; withDb also reports a failure as "luminet <command>: <message>" with exit code 1.
import { type Db, defaultDatabaseUrl, openDb } from "../db/open.ts";
import { runCommand } from "./run-command.ts";

export async function usingDb<T>(run: (db: Db) => Promise<T>): Promise<T> {
  const db = await openDb(process.env.DATABASE_URL || defaultDatabaseUrl);
  try {
    return await run(db);
  } finally {
    await db.close();
  }
}

export function withDb(command: string, run: (db: Db) => Promise<void>): Promise<void> {
  return runCommand(command, () => usingDb(run));
}
