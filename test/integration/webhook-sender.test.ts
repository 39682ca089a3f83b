// The webhook sender's claims on the run's real Postgres (PGlite where there is none): one delivery per
// endpoint at a time, endpoints in turns. On Postgres a claim written as one UPDATE … IN (SELECT … FOR UPDATE
// SKIP LOCKED LIMIT n) took every due row (the subquery ran again for each row updated, passing over the
// rows that statement had just changed); this checks what reaches the endpoints.
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { ensureOrg } from "../../gateway/api-keys.ts";
import { WebhookSender } from "../../gateway/webhook-sender.ts";
import { webhookDeliveries, webhookEndpoints } from "../../schema/db.ts";
import { ownDatabase } from "../support/own-database.ts";

let db: Db;
let drop: () => Promise<void>;
let server: Server;
/** The path of each request the endpoints got, in order. */
const received: string[] = [];
/** The most requests each path had in flight at once (each is answered after 30 ms). */
const mostAtOnce = new Map<string, number>();
const inFlight = new Map<string, number>();

beforeAll(async () => {
  const own = await ownDatabase("webhook_sender");
  drop = own.drop;
  db = await openDb(own.url);
  await migrate(db);
  server = createServer((req, res) => {
    const path = req.url ?? "";
    received.push(path);
    inFlight.set(path, (inFlight.get(path) ?? 0) + 1);
    mostAtOnce.set(path, Math.max(mostAtOnce.get(path) ?? 0, inFlight.get(path)!));
    setTimeout(() => {
      inFlight.set(path, inFlight.get(path)! - 1);
      res.writeHead(200).end();
    }, 30);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
});

afterAll(async () => {
  server?.close();
  await db?.close();
  await drop?.();
});

describe("the webhook sender on the database", () => {
  it("claims one delivery per endpoint a round, endpoints in turns, and sends each once", async () => {
    await ensureOrg(db, "acme");
    const port = (server.address() as AddressInfo).port;
    const secret = `whsec_${Buffer.from("k".repeat(32)).toString("base64")}`;
    for (const id of ["first", "second"]) {
      await db.insert(webhookEndpoints).values({
        id,
        orgId: "acme",
        url: `http://127.0.0.1:${port}/${id}`,
        secret,
        events: ["batch.completed"],
      });
    }
    const since = Date.now() - 60_000;
    for (let k = 0; k < 3; k++) {
      for (const endpointId of ["first", "second"]) {
        const eventId = `evt_${endpointId}_${k}`;
        await db.insert(webhookDeliveries).values({
          eventId,
          endpointId,
          type: "batch.completed",
          payload: { id: eventId, object: "event", type: "batch.completed", created_at: 0, data: {} },
          // The first endpoint's events all wait longer than the second's.
          nextAttemptAt: new Date(since + k + (endpointId === "second" ? 1_000 : 0)),
        });
      }
    }
    const sender = new WebhookSender({
      db,
      log: { info() {}, warn() {}, error() {} },
      allowPrivate: true,
      concurrency: 16,
    });
    expect(await sender.drain()).toBe(6);
    // Three rounds of two, one to each endpoint (within a round both are sent at once, in either order).
    const rounds = [0, 2, 4].map((at) => received.slice(at, at + 2).sort());
    expect(rounds).toEqual([
      ["/first", "/second"],
      ["/first", "/second"],
      ["/first", "/second"],
    ]);
    expect(Object.fromEntries(mostAtOnce)).toEqual({ "/first": 1, "/second": 1 });
    const rows = await db.select().from(webhookDeliveries);
    expect(rows.every((row) => row.deliveredAt !== null && row.attempts === 1)).toBe(true);
  });
});
