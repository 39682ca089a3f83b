// Run as a child process by test/integration/postgres-driver.test.ts, with a Postgres URL: reserves the
// only connection of a postgres.js pool (as a transaction reserves one), has another session terminate
// its backend, queries on it and prints how the query ended. The unmended driver dies there with an
// uncaught TypeError (scripts/patch-postgres.mjs); mended, the query fails with CONNECTION_CLOSED.
import postgres from "postgres";

const url = process.argv[2];
const sql = postgres(url, { max: 1, onnotice: () => {} });
const killer = postgres(url, { max: 1, onnotice: () => {} });
const reserved = await sql.reserve();
const [{ pid }] = await reserved`select pg_backend_pid() as pid`;
await killer`select pg_terminate_backend(${pid})`;
await new Promise((resolve) => setTimeout(resolve, 200));
const ended = await reserved`select ${1}::int as n`.then(
  () => "answered",
  (error) => `failed ${error.code ?? error.message}`,
);
console.log(`on the reserved connection: ${ended}`);
reserved.release();
await killer.end({ timeout: 1 });
await sql.end({ timeout: 1 });
console.log("exited normally");
