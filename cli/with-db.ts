// Runs a command's work against DATABASE_URL (default: the embedded PGlite under .luminet/), closing the
// database afterwards; a failure prints "luminet <command>: <message>" and sets a non-zero exit code.
import { type Db, defaultDatabaseUrl, openDb } from "../db/open.ts";

export async function withDb(command: string, run: (db: Db) => Promise<void>): Promise<void> {
  try {
    const db = await openDb(process.env.DATABASE_URL || defaultDatabaseUrl);
    try {
      await run(db);
    } finally {
      await db.close();
    }
  } catch (error) {
    process.stderr.write(`luminet ${command}: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
