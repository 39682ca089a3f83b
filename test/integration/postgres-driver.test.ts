// The Postgres driver survives the server process under a connection being terminated (by an operator, a
// proxy, a failover): the query on it fails with CONNECTION_CLOSED, whether the connection was reserved, in
// a transaction or running a query, and after the last two the pool's next queries are answered.
// postgres.js 3.4.9 unmended dies with an uncaught TypeError in the first case and fails the next query
// with the old connection's error in the last (scripts/patch-postgres.mjs mends both at install). Run in a child process, so that the unmended driver's
// crash fails this test rather than the test runner.
import { spawnSync } from "node:child_process";
import { describe, expect, inject, it } from "vitest";

const postgresUrl = inject("postgresUrl");

describe.skipIf(!postgresUrl)("the postgres driver on real Postgres", () => {
  it("fails the query on a connection whose server process was terminated, then serves the next ones", () => {
    const run = spawnSync(process.execPath, ["test/support/reserved-connection-killed.mjs", postgresUrl], {
      encoding: "utf8",
      timeout: 90_000,
    });
    expect(run.stderr).not.toContain("TypeError");
    expect(run.stdout.trim().split("\n")).toEqual([
      "on the reserved connection: failed CONNECTION_CLOSED",
      "in a transaction: failed CONNECTION_CLOSED; then: answered, answered, answered",
      "in the middle of a query: failed CONNECTION_CLOSED; then: answered, answered, answered",
      "exited normally",
    ]);
    expect(run.status).toBe(0);
  });
});
