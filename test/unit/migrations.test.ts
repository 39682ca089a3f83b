// The committed migrations are exactly what drizzle-kit generates from schema/db.ts: a table change made
// without `npm run db:generate` fails here, not when a database is migrated.
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, expect, it } from "vitest";

const out = mkdtempSync(join(tmpdir(), "luminet-migrations-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

it("schema/migrations is up to date with schema/db.ts", () => {
  cpSync("schema/migrations", out, { recursive: true });
  const result = spawnSync(
    process.execPath,
    [
      "node_modules/drizzle-kit/bin.cjs",
      "generate",
      "--dialect=postgresql",
      "--schema=./schema/db.ts",
      // drizzle-kit only accepts an output folder relative to the working directory.
      `--out=${relative(process.cwd(), out)}`,
    ],
    { encoding: "utf8" },
  );
  expect(result.status, result.stderr).toBe(0);
  expect(result.stdout).toContain("No schema changes");
  expect(readdirSync(out).sort()).toEqual(readdirSync("schema/migrations").sort());
});
