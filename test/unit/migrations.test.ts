// The committed migrations are exactly what drizzle-kit generates from schema/db.ts: a table change made
// without `npm run db:generate` fails here, not when a database is migrated; and a database without them is
// refused with what to do.
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, expect, it } from "vitest";
import { registerMigrate } from "../../cli/commands/migrate.ts";
import { registerQuota } from "../../cli/commands/quota.ts";
import { luminetInProcess } from "../support/luminet-command.ts";

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

it("an operator command on a database not yet migrated says to run luminet migrate, not the SQL that failed", async () => {
  const dir = join(out, "fresh-db");
  const env = { DATABASE_URL: `pglite:${dir}` };
  const before = await luminetInProcess(registerQuota, ["quota", "show", "--org", "demo"], env);
  expect(before.code).toBe(1);
  expect(before.stderr).toMatch(
    /^luminet quota show: pglite .*fresh-db has 0 of Luminet's \d+ migrations: run `luminet migrate`/,
  );
  expect(before.stderr).not.toContain("Failed query");
  expect((await luminetInProcess(registerMigrate, ["migrate"], env)).code).toBe(0);
  const after = await luminetInProcess(registerQuota, ["quota", "show", "--org", "demo"], env);
  expect(after.stderr).not.toContain("migrations");
});
