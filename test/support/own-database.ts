// A database of one test file's own, so that what it lists and counts are its own rows: a scratch database
// on the run's Postgres (opened in milliseconds), else, where the run has no Postgres, a PGlite folder
// (each open boots it again: seconds).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inject } from "vitest";
import { scratchDatabase } from "../../scripts/scratch-database.ts";

/** `label`: [a-z0-9_], names the database or folder. */
export async function ownDatabase(label: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const server = inject("postgresUrl");
  if (server) return scratchDatabase(server, label);
  const dir = mkdtempSync(join(tmpdir(), `luminet-${label}-`));
  return {
    url: `pglite:${join(dir, "db")}`,
    drop: async () => rmSync(dir, { recursive: true, force: true }),
  };
}
