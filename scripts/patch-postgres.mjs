// Run by `npm ci` (postinstall): mends a defect of the `postgres` driver (postgres.js 3.4.9, the newest
// release; upstream porsager/postgres#1154 and #1208, fixes proposed but not released). A write shorter
// than 1 KiB is deferred to a setImmediate; when the connection closes first, (a) the deferred write runs
// on a null socket and throws where nothing can catch it, killing the process (seen in
// test/integration/drills/postgres-outage.test.ts), and (b) the closed connection keeps its cancelled
// timer, so after it reconnects its short writes are never sent again and its queries hang. This guards
// the deferred write (the queries waiting on the connection fail with CONNECTION_CLOSED, as for any closed
// connection) and clears the timer and the buffered bytes on close. Plain JavaScript: it runs before
// anything else is installed. Idempotent; fails the install if the driver is not the version it knows.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const EXPECTED_VERSION = "3.4.9";
const MARK = "luminet: the socket can be gone";
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "node_modules", "postgres");

const guard = `  function nextWrite(fn) {
    // ${MARK} when a deferred write runs (see scripts/patch-postgres.mjs)
    if (!socket) {
      chunk = nextWriteTimer = null
      error(Errors.connection('CONNECTION_CLOSED', options))
      return false
    }
`;

/** [what the driver has, what it becomes, how many times it must occur] */
const edits = [
  ["  function nextWrite(fn) {\n", guard, 1],
  [
    "    clearImmediate(nextWriteTimer)\n",
    "    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null\n",
    2,
  ],
];

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
  const file = join(root, flavour, "connection.js");
  let text = readFileSync(file, "utf8");
  if (text.includes(MARK)) continue;
  for (const [from, to, times] of edits) {
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
