// A Postgres database of a run's own (a benchmark's, or a test file's), created on a server (DATABASE_URL's)
// and dropped afterwards, so runs on a shared server never see each other's rows.
import postgres from "postgres";

/** A database of the run's own on the server of `serverUrl`, and how to drop it; `label`: [a-z0-9_]. */
export async function scratchDatabase(
  serverUrl: string,
  label: string,
): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `luminet_scratch_${label}_${process.pid}_${Date.now()}`;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const sql = postgres(serverUrl, { max: 1, onnotice: () => {} });
      await sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await sql.end();
    },
  };
}

/** The Postgres server DATABASE_URL (or `url`) names, or an error that says what the benchmark needs it for. */
export function postgresServerUrl(url: string | undefined): string {
  if (!url || !/^postgres(ql)?:\/\//.test(url)) {
    throw new Error(
      "DATABASE_URL must name a Postgres server (postgres://...): the benchmark creates a scratch database there and drops it afterwards",
    );
  }
  return url;
}
