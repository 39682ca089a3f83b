// Applies the drizzle-kit migrations in schema/migrations with drizzle's migrator for the driver in use.
// Idempotent: drizzle records each applied migration in drizzle.__drizzle_migrations and skips it next time.
// Node only (the migrator reads the folder from disk); Workers run against a database migrated beforehand.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { is, sql } from "drizzle-orm";
import type { MigrationConfig } from "drizzle-orm/migrator";
import type { Db } from "./open.ts";

// Beside this module, not the working directory: `luminet migrate` works from anywhere.
const config: MigrationConfig = {
  migrationsFolder: fileURLToPath(new URL("../schema/migrations", import.meta.url)),
};

export interface MigrationReport {
  /** Migrations this call applied. */
  applied: number;
  /** Migrations the database has now. */
  total: number;
}

/** A database that lacks migrations this code needs: its queries would fail with bare SQL errors. */
export class NotMigratedError extends Error {
  override name = "NotMigratedError";
}

/**
 * Refuses a database without every migration this code knows (an empty one, or one behind a newer
 * release), saying how to fix it; `database` names it (describeDatabaseUrl: never the password).
 */
export async function requireMigrated(db: Db, database: string): Promise<void> {
  const applied = await appliedCount(db);
  const known = knownCount();
  if (applied < known) {
    throw new NotMigratedError(
      `${database} has ${applied} of Luminet's ${known} migrations: run \`luminet migrate\` with the same DATABASE_URL first`,
    );
  }
}

/** How many migrations this code has: the entries of the journal drizzle-kit keeps beside them. */
function knownCount(): number {
  const journal = JSON.parse(readFileSync(`${config.migrationsFolder}/meta/_journal.json`, "utf8")) as {
    entries: unknown[];
  };
  return journal.entries.length;
}

export async function migrate(db: Db): Promise<MigrationReport> {
  const before = await appliedCount(db);
  await runMigrator(db);
  const total = await appliedCount(db);
  return { applied: total - before, total };
}

async function appliedCount(db: Db): Promise<number> {
  const journalExists = await db.$count(
    sql`pg_catalog.pg_tables`,
    sql`schemaname = 'drizzle' and tablename = '__drizzle_migrations'`,
  );
  return journalExists ? db.$count(sql`drizzle.__drizzle_migrations`) : 0;
}

async function runMigrator(db: Db): Promise<void> {
  switch (db.driver) {
    case "pglite": {
      const { PgliteDatabase } = await import("drizzle-orm/pglite");
      const { migrate } = await import("drizzle-orm/pglite/migrator");
      if (is(db, PgliteDatabase)) return migrate(db, config);
      break;
    }
    case "postgres": {
      const { PostgresJsDatabase } = await import("drizzle-orm/postgres-js");
      const { migrate } = await import("drizzle-orm/postgres-js/migrator");
      if (is(db, PostgresJsDatabase)) return migrate(db, config);
      break;
    }
    case "neon": {
      const { NeonDatabase } = await import("drizzle-orm/neon-serverless");
      const { migrate } = await import("drizzle-orm/neon-serverless/migrator");
      if (is(db, NeonDatabase)) return migrate(db, config);
      break;
    }
  }
  throw new Error(
    `migrate: the database says its driver is "${db.driver}" but was not opened by that driver`,
  );
}
