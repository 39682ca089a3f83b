// `luminet migrate`: apply the drizzle-kit migrations in schema/migrations.
import type { Command } from "commander";
import { notImplemented } from "../not-implemented.ts";

export function registerMigrate(program: Command): void {
  program
    .command("migrate")
    .description("apply database migrations (DATABASE_URL: postgres://…, or pglite:<dir> / pglite:memory)")
    .action(notImplemented("migrate", "lands with the foundation issue"));
}
