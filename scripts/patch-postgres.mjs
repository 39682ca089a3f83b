// Run by `npm ci` (postinstall): mends defects of the `postgres` driver (postgres.js 3.4.9, the newest
// release) that show when a connection closes under it (a Postgres restart, or one server process
// terminated by an operator or a proxy):
// - A write shorter than 1 KiB is deferred to a setImmediate; when the connection closes first, the
//   deferred write runs on a null socket and throws where nothing can catch it, killing the process (seen
//   in test/integration/drills/postgres-outage.test.ts), and the closed connection keeps its cancelled
//   timer, so after it reconnects its short writes are never sent again and its queries hang (upstream
//   porsager/postgres#1154 and #1208, fixes proposed but not released). Mended: the deferred write checks
//   the socket (the queries waiting on the connection fail with CONNECTION_CLOSED, as for any closed
//   connection), and close forgets the timer and the buffered bytes.
// - A query running when its server process is terminated receives the server's error and then the close;
//   the connection kept both, so the first query on it after it reconnected failed with that old error
//   (57P01, "terminating connection due to administrator command"). Mended: close forgets them once it has
//   failed that query.
// Not mended: a connection reserved with sql.reserve() that closes can leave its pool slot unusable after
// release (the pool's queries sent to it wait). Luminet never calls reserve(); the driver's transactions,
// which it uses, hold their connection another way and recover.
// Plain JavaScript: it runs before anything else is installed. Idempotent (each edit is skipped where it is
// already made); fails the install if the driver is not the version it knows.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const EXPECTED_VERSION = "3.4.9";
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "node_modules", "postgres");

const guard = `  function nextWrite(fn) {
    // luminet: the socket can be gone when a deferred write runs (see scripts/patch-postgres.mjs)
    if (!socket) {
      chunk = nextWriteTimer = null
      error(Errors.connection('CONNECTION_CLOSED', options))
      return false
    }
`;
const failedOnClose =
  "    !hadError && (query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket))\n";

/** Per file of each flavour: [what the driver has, what it becomes, how many times it must occur]. */
const edits = {
  "connection.js": [
    ["  function nextWrite(fn) {\n", guard, 1],
    [
      "    clearImmediate(nextWriteTimer)\n",
      "    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null\n",
      2,
    ],
    [
      failedOnClose,
      `${failedOnClose}    // luminet: forget the failed query and its server error (see scripts/patch-postgres.mjs)\n    query = errorResponse = null\n`,
      1,
    ],
  ],
};

let version;
try {
  version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;
} catch {
  // Installed without the driver (a partial install): nothing to mend.
  process.exit(0);
}
if (version !== EXPECTED_VERSION) {
  console.error(
    `scripts/patch-postgres.mjs knows postgres ${EXPECTED_VERSION}, found ${version}: check whether the new release fixes porsager/postgres#1154, then update or remove this patch`,
  );
  process.exit(1);
}

for (const flavour of ["src", "cjs/src", "cf/src"]) {
  for (const [name, fileEdits] of Object.entries(edits)) {
    const file = join(root, flavour, name);
    let text = readFileSync(file, "utf8");
    for (const [from, to, times] of fileEdits) {
      if (text.split(to).length - 1 === times) continue;
      const found = text.split(from).length - 1;
      if (found !== times) {
        console.error(
          `scripts/patch-postgres.mjs: expected ${times} of ${JSON.stringify(from)} in ${file}, found ${found}`,
        );
        process.exit(1);
      }
      text = text.replaceAll(from, to);
    }
    writeFileSync(file, text);
  }
}
