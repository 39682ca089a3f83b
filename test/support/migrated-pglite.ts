// A migrated, empty PGlite database in memory for one test, loaded from the copy the run's global setup
// made (test/setup/services.ts): about a second, where booting PGlite and migrating takes about three.
import { readFile } from "node:fs/promises";
import { PGlite } from "@electric-sql/pglite";
import { drizzle } from "drizzle-orm/pglite";
import { inject } from "vitest";
import type { Db } from "../../db/open.ts";
import * as schema from "../../schema/db.ts";

export async function openMigratedPglite(): Promise<Db> {
  const template = await readFile(inject("pgliteTemplate"));
  const client = await PGlite.create({ loadDataDir: new Blob([template]) });
  return Object.assign(drizzle({ client, schema }), {
    driver: "pglite" as const,
    close: () => client.close(),
  });
}
