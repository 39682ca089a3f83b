// The `postgres` driver as installed carries scripts/patch-postgres.mjs's mend (run by `npm ci` as the
// postinstall script): every flavour of its connection guards a deferred write against a closed socket,
// clears the write timer on close and forgets the failed query's server error. An install that skipped scripts (`--ignore-scripts`) fails here rather
// than in a Postgres outage, where the unmended driver kills the process
// (test/integration/drills/postgres-outage.test.ts drives that outage).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";

// The package's folder, from its CommonJS entry (cjs/src/index.js); its exports hide package.json.
const driver = join(dirname(createRequire(import.meta.url).resolve("postgres")), "..", "..");

describe("the installed postgres driver", () => {
  for (const flavour of ["src", "cjs/src", "cf/src"]) {
    it(`guards deferred writes, and forgets the timer and a failed query on close (${flavour})`, () => {
      const text = readFileSync(join(driver, flavour, "connection.js"), "utf8");
      const nextWrite = text.slice(text.indexOf("function nextWrite(fn) {"));
      expect(nextWrite.slice(0, nextWrite.indexOf("socket.write("))).toContain("if (!socket) {");
      // terminate() and closed(): the timer cleared, then forgotten with the bytes it would have sent.
      const cleared = /^ {4}clearImmediate\(nextWriteTimer\)\n {4}chunk = nextWriteTimer = null$/gm;
      expect(text.match(cleared)).toHaveLength(2);
      const closed = text.slice(text.indexOf("async function closed(hadError) {"));
      expect(closed.slice(0, closed.indexOf("onclose(connection"))).toContain("query = errorResponse = null");
    });
  }
});
