// Opens the database named by a URL and gives the same drizzle API over schema/db.ts for every driver:
// PGlite in memory or on disk (dev, tests), postgres.js (Node), Neon's serverless driver (Cloudflare Workers).
// Each driver is imported only when asked for, so a Workers bundle never loads PGlite or postgres.js.
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import * as schema from "../schema/db.ts";

export type Schema = typeof schema;
export type DbDriver = "pglite" | "postgres" | "neon";

/** The drizzle API all drivers share, the driver in use, and a way to release its connections. */
export type Db = PgDatabase<PgQueryResultHKT, Schema> & {
  readonly driver: DbDriver;
  close(): Promise<void>;
};

export interface OpenDbOptions {
  /** "neon" opens a postgres:// URL with @neondatabase/serverless, the driver for Cloudflare Workers. */
  driver?: "neon";
}

/**
 * What DATABASE_URL means when it is unset: PGlite on disk in LUMINET_HOME (the folder `luminet dev` keeps
 * its data in), else in `.luminet` of the working directory, as dev's own database is.
 */
export function defaultDatabaseUrl(): string {
  return `pglite:${process.env.LUMINET_HOME || ".luminet"}/db`;
}

export class DatabaseUrlError extends Error {
  override name = "DatabaseUrlError";
}

type Target =
  | { driver: "pglite"; dataDir: string | undefined }
  | { driver: "postgres" | "neon"; url: string; host: string; database: string };

function parse(url: string, options: OpenDbOptions): Target {
  if (url.startsWith("pglite:")) {
    const rest = url.slice("pglite:".length);
    if (options.driver === "neon") throw new DatabaseUrlError("the neon driver needs a postgres:// URL");
    return { driver: "pglite", dataDir: rest === "" || rest === "memory" ? undefined : rest };
  }
  const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0];
  if (scheme !== "postgres:" && scheme !== "postgresql:") {
    // Only the scheme goes into the message: the rest of a URL may hold a password.
    throw new DatabaseUrlError(
      `unsupported database URL scheme ${scheme ? `"${scheme}"` : "(none)"}: ` +
        "expected postgres://, postgresql://, pglite:<dir> or pglite:memory",
    );
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new DatabaseUrlError(`malformed ${scheme}// URL`);
  }
  return {
    driver: options.driver ?? "postgres",
    url,
    host: parsed.host,
    database: decodeURIComponent(parsed.pathname.slice(1)),
  };
}

/** Where a URL points, for logs: driver, host and database, never the user or password. */
export function describeDatabaseUrl(url: string, options: OpenDbOptions = {}): string {
  const target = parse(url, options);
  if (target.driver === "pglite") return `pglite ${target.dataDir ?? "(memory)"}`;
  return `${target.driver} ${target.host}/${target.database}`;
}

export async function openDb(url: string, options: OpenDbOptions = {}): Promise<Db> {
  const target = parse(url, options);
  switch (target.driver) {
    case "pglite": {
      const { PGlite } = await import("@electric-sql/pglite");
      const { drizzle } = await import("drizzle-orm/pglite");
      let release = () => {};
      if (target.dataDir !== undefined) {
        // PGlite makes its own folder but not the ones above it (`.luminet/` on a fresh checkout).
        const { mkdir } = await import("node:fs/promises");
        await mkdir(target.dataDir, { recursive: true });
        const { lockPgliteFolder } = await import("./pglite-lock.ts");
        release = lockPgliteFolder(target.dataDir);
      }
      // create() waits for PGlite to start, so a broken data folder fails here rather than at a first query.
      const client = await PGlite.create(target.dataDir).catch((error: unknown) => {
        release();
        throw error;
      });
      return Object.assign(drizzle({ client, schema }), {
        driver: target.driver,
        close: async () => {
          await client.close();
          release();
        },
      });
    }
    case "postgres": {
      const { default: postgres } = await import("postgres");
      const { drizzle } = await import("drizzle-orm/postgres-js");
      // Migrations' "already exists, skipping" notices are expected, not news.
      const client = postgres(target.url, { onnotice: () => {} });
      return Object.assign(drizzle({ client, schema }), { driver: target.driver, close: () => client.end() });
    }
    case "neon": {
      const { Pool } = await import("@neondatabase/serverless");
      const { drizzle } = await import("drizzle-orm/neon-serverless");
      // On Workers a pool must not outlive the request that opened it: open per request, close at its end.
      const client = new Pool({ connectionString: target.url });
      return Object.assign(drizzle({ client, schema }), { driver: target.driver, close: () => client.end() });
    }
  }
}
