// isDatabaseUnavailable on errors the drivers really throw: a refused connection (postgres.js, wrapped by
// drizzle) is "unavailable"; a query the database refuses is not.
import { sql } from "drizzle-orm";
import { describe, expect, inject, it } from "vitest";
import { openDb } from "../../db/open.ts";
import { isDatabaseUnavailable } from "../../db/unavailable.ts";
import { freePort } from "../support/nats-websocket.ts";

async function failureOf(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run();
  } catch (error) {
    return error;
  }
  throw new Error("expected the query to fail");
}

describe("isDatabaseUnavailable", () => {
  it("is true for a database nobody answers for", async () => {
    const db = await openDb(`postgres://postgres@127.0.0.1:${await freePort()}/postgres`);
    try {
      const error = await failureOf(() => db.execute(sql`select 1`));
      expect(isDatabaseUnavailable(error)).toBe(true);
    } finally {
      await db.close();
    }
  });

  it.skipIf(!inject("postgresUrl"))(
    "is true for a Postgres that takes no connection now: one not accepting connections, one out of slots",
    async () => {
      const server = inject("postgresUrl");
      const admin = await openDb(server);
      const name = `unavailable_${process.pid}`;
      const urlOf = (user: string, database: string) => {
        const url = new URL(server);
        url.username = user;
        url.password = "";
        url.pathname = `/${database}`;
        return url.toString();
      };
      try {
        await admin.execute(sql.raw(`create database ${name} with allow_connections false`));
        // No connection left for this role: Postgres's answer when it is out of connection slots.
        await admin.execute(sql.raw(`create role ${name} login connection limit 0`));
        for (const url of [urlOf(new URL(server).username, name), urlOf(name, "postgres")]) {
          const db = await openDb(url);
          try {
            const error = await failureOf(() => db.execute(sql`select 1`));
            expect(isDatabaseUnavailable(error), String(error)).toBe(true);
          } finally {
            await db.close();
          }
        }
      } finally {
        await admin.execute(sql.raw(`drop database if exists ${name}`));
        await admin.execute(sql.raw(`drop role if exists ${name}`));
        await admin.close();
      }
    },
  );

  it("is false for a query the database refuses, and for other errors", async () => {
    const db = await openDb("pglite:memory");
    try {
      const error = await failureOf(() => db.execute(sql`select * from no_such_table`));
      expect(isDatabaseUnavailable(error)).toBe(false);
    } finally {
      await db.close();
    }
    expect(isDatabaseUnavailable(new Error("boom"))).toBe(false);
    expect(isDatabaseUnavailable("ECONNREFUSED")).toBe(false);
  });
});
