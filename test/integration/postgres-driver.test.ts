// The Postgres driver survives a connection whose server process dies while it is reserved (as every
// transaction's is): its query fails with CONNECTION_CLOSED instead of the process dying with an uncaught
// TypeError (postgres.js 3.4.9's defect, mended at install by scripts/patch-postgres.mjs). Run in a child
// process, so that the unmended driver's crash fails this test rather than the test runner.
import { spawnSync } from "node:child_process";
import { describe, expect, inject, it } from "vitest";

const postgresUrl = inject("postgresUrl");

describe.skipIf(!postgresUrl)("the postgres driver on real Postgres", () => {
  it("fails the query of a reserved connection whose backend was terminated, and lives on", () => {
    const run = spawnSync(process.execPath, ["test/support/reserved-connection-killed.mjs", postgresUrl], {
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(run.stderr).not.toContain("TypeError");
    expect(run.stdout.trim().split("\n")).toEqual([
      "on the reserved connection: failed CONNECTION_CLOSED",
      "exited normally",
    ]);
    expect(run.status).toBe(0);
  });
});
