// `luminet migrate`: apply the drizzle-kit migrations in schema/migrations to DATABASE_URL.
import type { Command } from "commander";
import { logger } from "../../core/logger.ts";
import { migrate } from "../../db/migrate.ts";
import { defaultDatabaseUrl, describeDatabaseUrl, openDb } from "../../db/open.ts";

export function registerMigrate(program: Command): void {
  program
    .command("migrate")
    .description("apply database migrations (DATABASE_URL: postgres://…, or pglite:<dir> / pglite:memory)")
    .action(async () => {
      const url = process.env.DATABASE_URL || defaultDatabaseUrl();
      try {
        // The description names driver, host and database only: the URL itself may hold a password.
        const database = describeDatabaseUrl(url);
        const db = await openDb(url);
        try {
          const { applied, total } = await migrate(db);
          logger.info(
            { database, applied, total },
            applied > 0 ? `applied ${applied} migration(s)` : "database already up to date",
          );
        } finally {
          await db.close();
        }
      } catch (error) {
        logger.error({ error: error instanceof Error ? error.message : String(error) }, "migrate failed");
        process.exitCode = 1;
      }
    });
}
