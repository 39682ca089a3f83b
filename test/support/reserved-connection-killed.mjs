// Run as a child process by test/integration/postgres-driver.test.ts, with a Postgres URL: has another
// session terminate the server process under a postgres.js pool's only connection at three moments, and
// prints how the query on it ended and how the pool's next three queries did (scripts/patch-postgres.mjs
// mends what the driver got wrong in each):
// - while the connection is reserved (sql.reserve()): unmended, the process dies with an uncaught TypeError.
//   That pool is not asked again: its slot can stay unusable after the release, which is not mended
//   (Luminet never reserves a connection);
// - between two statements of a transaction through drizzle (how Luminet writes);
// - in the middle of a query: unmended, the pool's next query fails with the old connection's error.
import { drizzle } from "drizzle-orm/postgres-js";
import postgres from "postgres";

const url = process.argv[2];
const killer = postgres(url, { max: 1, onnotice: () => {} });
const terminate = (pid) => killer`select pg_terminate_backend(${pid})`;
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const outcome = (work) =>
  Promise.race([
    work.then(
      () => "answered",
      (error) => `failed ${error.code ?? error.message}`,
    ),
    // unref: a query that ended must not keep the process waiting for this.
    new Promise((resolve) => setTimeout(resolve, 10_000, "hung").unref()),
  ]);
/** How three queries in a row on the pool end, one after the other. */
const nextThree = async (sql) => {
  const ends = [];
  for (let i = 0; i < 3; i++) ends.push(await outcome(sql`select ${i}::int as n`));
  return ends.join(", ");
};

{
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const reserved = await sql.reserve();
  const [{ pid }] = await reserved`select pg_backend_pid() as pid`;
  await terminate(pid);
  await pause(200);
  console.log(`on the reserved connection: ${await outcome(reserved`select ${1}::int as n`)}`);
  reserved.release();
  await sql.end({ timeout: 1 });
}
{
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const db = drizzle({ client: sql });
  const inTransaction = db.transaction(async (tx) => {
    const [{ pid }] = await tx.execute("select pg_backend_pid() as pid");
    await terminate(pid);
    await pause(200);
    await tx.execute("select 1");
  });
  console.log(`in a transaction: ${await outcome(inTransaction)}; then: ${await nextThree(sql)}`);
  await sql.end({ timeout: 1 });
}
{
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const [{ pid }] = await sql`select pg_backend_pid() as pid`;
  const running = outcome(sql`select pg_sleep(5)`);
  await pause(300);
  await terminate(pid);
  console.log(`in the middle of a query: ${await running}; then: ${await nextThree(sql)}`);
  await sql.end({ timeout: 1 });
}
await killer.end({ timeout: 1 });
console.log("exited normally");
