// Delivers queued webhook events (gateway/webhooks.ts) from every Node gateway process: it claims due
// deliveries with a lease (FOR UPDATE SKIP LOCKED, so two senders never take the same one; a sender that
// dies leaves its claims due again when the lease ends; one delivery per endpoint at a time in each
// process, the endpoint waiting longest first, so one org's slow or dead endpoint holds one of the
// process's places and delays no one else's), POSTs each event signed as Standard Webhooks sign
// (webhook-id, webhook-timestamp, webhook-signature: v1 and the base64 HMAC-SHA256 of "id.timestamp.body"
// under the endpoint's secret, opened if sealed (secret-box.ts) — what OpenAI sends and its SDKs'
// `webhooks.unwrap` checks), and marks it delivered on a 2xx answer. Anything else (a secret this process
// cannot open too) is tried again later, waiting twice as long each time (up to an hour), until 72 hours
// after the event; then it is marked failed. An endpoint whose host resolves to a private address is
// refused unless the operator allows private webhooks (webhook-address.ts), at the connection itself
// (webhook-post.ts), so DNS cannot answer one address to the check and another to the connection.
import { and, asc, eq, inArray, isNotNull, isNull, lt, lte, notInArray, or, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { webhookDeliveries, webhookEndpoints } from "../schema/db.ts";
import type { GatewayLog, GatewayMetrics } from "./deps.ts";
import { DueSweep, type Sweep } from "./due-sweep.ts";
import { Pause } from "./pause.ts";
import { SecretBox } from "./secret-box.ts";
import { postWebhook } from "./webhook-post.ts";

export interface WebhookSenderOptions {
  db: Db;
  log: GatewayLog;
  /** Counts attempts by outcome (Prometheus on Node). */
  metrics?: GatewayMetrics | null;
  /** Deliveries this process sends at once. */
  concurrency?: number;
  /** Wait between looks for due deliveries. */
  pollMs?: number;
  /** How long one delivery may take before it counts as failed. */
  timeoutMs?: number;
  /** Deliver to endpoints whose host resolves to a private address (a development stack). */
  allowPrivate?: boolean;
  /** Opens the endpoints' sealed signing secrets (the gateway's GatewayDeps.secrets); default: no key. */
  secrets?: SecretBox;
  now?: () => number;
}

const FIRST_RETRY_MS = 5_000;
const MAX_RETRY_DELAY_MS = 60 * 60_000;
/** How long after an event its delivery is still tried. */
export const GIVE_UP_AFTER_MS = 72 * 60 * 60_000;
/** How long a delivery that ended is kept. */
export const KEEP_ENDED_MS = 30 * 24 * 60 * 60_000;

/** Deletes up to `limit` deliveries that ended (delivered or given up) before KEEP_ENDED_MS ago. */
const sweepEndedDeliveries: Sweep = async (db, now, limit) => {
  const old = db
    .select({ eventId: webhookDeliveries.eventId, endpointId: webhookDeliveries.endpointId })
    .from(webhookDeliveries)
    .where(
      and(
        lt(webhookDeliveries.createdAt, new Date(now - KEEP_ENDED_MS)),
        or(isNotNull(webhookDeliveries.deliveredAt), isNotNull(webhookDeliveries.failedAt)),
      ),
    )
    .limit(limit);
  const deleted = await db
    .delete(webhookDeliveries)
    .where(sql`(${webhookDeliveries.eventId}, ${webhookDeliveries.endpointId}) in ${old}`)
    .returning({ eventId: webhookDeliveries.eventId });
  return deleted.length;
};

/** How long to wait before attempt `attempts + 1`, after `attempts` failed ones. */
export function retryDelayMs(attempts: number): number {
  return Math.min(MAX_RETRY_DELAY_MS, FIRST_RETRY_MS * 2 ** (attempts - 1));
}

/** The Standard Webhooks signature of a delivery: "v1,<base64 HMAC-SHA256>". */
export async function signature(
  secret: string,
  id: string,
  timestamp: number,
  body: string,
): Promise<string> {
  const keyBytes = Uint8Array.from(atob(secret.replace(/^whsec_/, "")), (c) => c.charCodeAt(0));
  const key = await crypto.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const signed = await crypto.subtle.sign(
    "HMAC",
    key,
    new TextEncoder().encode(`${id}.${timestamp}.${body}`),
  );
  return `v1,${btoa(String.fromCharCode(...new Uint8Array(signed)))}`;
}

interface Claimed {
  eventId: string;
  endpointId: string;
  payload: unknown;
  attempts: number;
  createdAt: Date;
  url: string;
  secret: string;
}

export class WebhookSender {
  readonly #options: Required<WebhookSenderOptions>;
  #running = false;
  #loop: Promise<void> | null = null;
  readonly #pause = new Pause();
  /** The delivery in flight to each endpoint: one at a time per endpoint. */
  readonly #inFlight = new Map<string, Promise<void>>();
  /** Deliveries that ended (delivered or given up) are kept 30 days, for the dashboard and for questions. */
  readonly #ended: DueSweep;

  constructor(options: WebhookSenderOptions) {
    this.#options = {
      concurrency: 16,
      pollMs: 1_000,
      timeoutMs: 10_000,
      allowPrivate: false,
      secrets: new SecretBox(undefined),
      metrics: null,
      now: Date.now,
      ...options,
    };
    this.#ended = new DueSweep(sweepEndedDeliveries, this.#options.now);
  }

  /** Deletes one batch of deliveries that ended over 30 days ago if that sweep is due; how many, or null. */
  async sweepIfDue(): Promise<number | null> {
    return this.#ended.ifDue(this.#options.db);
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = this.#run();
  }

  /** Stops looking for deliveries once the ones in flight are sent (or have timed out). */
  async stop(): Promise<void> {
    this.#running = false;
    this.#pause.wake();
    await this.#loop;
    await Promise.all(this.#inFlight.values());
  }

  /** Sends everything due now, once each, for tests; how many it tried. */
  async drain(): Promise<number> {
    let tried = 0;
    for (;;) {
      const claimed = await this.#claim(this.#options.concurrency);
      if (claimed.length === 0) return tried;
      await Promise.all(claimed.map((delivery) => this.#send(delivery)));
      tried += claimed.length;
    }
  }

  async #run(): Promise<void> {
    while (this.#running) {
      try {
        for (const delivery of await this.#claim(this.#options.concurrency - this.#inFlight.size)) {
          const sent = this.#send(delivery).finally(() => {
            this.#inFlight.delete(delivery.endpointId);
            this.#pause.wake();
          });
          this.#inFlight.set(delivery.endpointId, sent);
        }
        const swept = await this.sweepIfDue();
        if (swept)
          this.#options.log.info({ deleted: swept }, "deleted webhook deliveries past their 30 days");
      } catch (error) {
        this.#options.log.warn(
          { err: error instanceof Error ? error.message : String(error) },
          "webhook sender pass failed",
        );
      }
      // Until a delivery ends (a place, and maybe its endpoint's next) or the next look.
      await this.#pause.sleep(this.#options.pollMs);
    }
  }

  /**
   * Takes up to `room` due deliveries, one per endpoint, of endpoints with none in flight here, the
   * endpoint waiting longest first; each claim's lease ends after twice the delivery timeout. So an
   * endpoint that answers slowly or not at all holds one place at a time, and never delays the others.
   */
  async #claim(room: number): Promise<Claimed[]> {
    if (room <= 0) return [];
    const { db, timeoutMs } = this.#options;
    const now = new Date(this.#options.now());
    const d = webhookDeliveries;
    const due = and(isNull(d.deliveredAt), isNull(d.failedAt), lte(d.nextAttemptAt, now));
    const busy = [...this.#inFlight.keys()];
    const waitingSince = sql<Date>`min(${d.nextAttemptAt})`;
    const endpoints = db
      .select({ endpointId: d.endpointId })
      .from(d)
      .where(and(due, busy.length > 0 ? notInArray(d.endpointId, busy) : undefined))
      .groupBy(d.endpointId)
      .orderBy(waitingSince)
      .limit(room)
      .as("due_endpoint");
    const first = db
      .select({ eventId: d.eventId, endpointId: d.endpointId })
      .from(d)
      .where(and(eq(d.endpointId, endpoints.endpointId), due))
      .orderBy(asc(d.nextAttemptAt))
      .limit(1)
      .for("update", { skipLocked: true })
      .as("next_delivery");
    const claimed = await db.transaction(async (tx) => {
      // Locked here, updated by key below: in one UPDATE … IN (this), Postgres may run the subquery again
      // for each row it updates, and SKIP LOCKED then passes over the rows this very statement changed,
      // taking every due row.
      const picks = await tx
        .select({ eventId: first.eventId, endpointId: first.endpointId })
        .from(endpoints)
        .innerJoinLateral(first, sql`true`);
      if (picks.length === 0) return [];
      return tx
        .update(d)
        .set({ nextAttemptAt: new Date(now.getTime() + 2 * timeoutMs) })
        .where(or(...picks.map((p) => and(eq(d.eventId, p.eventId), eq(d.endpointId, p.endpointId)))))
        .returning({
          eventId: d.eventId,
          endpointId: d.endpointId,
          payload: d.payload,
          attempts: d.attempts,
          createdAt: d.createdAt,
        });
    });
    if (claimed.length === 0) return [];
    const endpointRows = await db
      .select({ id: webhookEndpoints.id, url: webhookEndpoints.url, secret: webhookEndpoints.secret })
      .from(webhookEndpoints)
      .where(
        inArray(
          webhookEndpoints.id,
          claimed.map((row) => row.endpointId),
        ),
      );
    const byId = new Map(endpointRows.map((endpoint) => [endpoint.id, endpoint]));
    return claimed.flatMap((row) => {
      const endpoint = byId.get(row.endpointId);
      return endpoint ? [{ ...row, url: endpoint.url, secret: endpoint.secret }] : [];
    });
  }

  /** One attempt: POSTs the event and records the outcome. */
  async #send(delivery: Claimed): Promise<void> {
    const { db, log } = this.#options;
    const failure = await this.#post(delivery).catch((error: unknown) =>
      error instanceof Error ? error.message : String(error),
    );
    const attempts = delivery.attempts + 1;
    const now = this.#options.now();
    const row = and(
      eq(webhookDeliveries.eventId, delivery.eventId),
      eq(webhookDeliveries.endpointId, delivery.endpointId),
    );
    if (failure === null) {
      await db
        .update(webhookDeliveries)
        .set({ attempts, deliveredAt: new Date(now), lastError: null })
        .where(row);
      this.#options.metrics?.webhookDelivery("delivered");
      return;
    }
    const next = now + retryDelayMs(attempts);
    const giveUp = next > delivery.createdAt.getTime() + GIVE_UP_AFTER_MS;
    await db
      .update(webhookDeliveries)
      .set({
        attempts,
        lastError: failure.slice(0, 500),
        ...(giveUp ? { failedAt: new Date(now) } : { nextAttemptAt: new Date(next) }),
      })
      .where(row);
    this.#options.metrics?.webhookDelivery(giveUp ? "failed" : "retried");
    // The URL may hold a token; the endpoint's id names it.
    log.warn(
      { event: delivery.eventId, endpoint: delivery.endpointId, attempts, err: failure },
      giveUp ? "webhook delivery failed for good" : "webhook delivery failed; will retry",
    );
  }

  /** Null when the endpoint answered 2xx; else why not. */
  async #post(delivery: Claimed): Promise<string | null> {
    const body = JSON.stringify(delivery.payload);
    const timestamp = Math.floor(this.#options.now() / 1000);
    const status = await postWebhook({
      url: new URL(delivery.url),
      headers: {
        "content-type": "application/json",
        "user-agent": "Luminet-Webhooks/1",
        "webhook-id": delivery.eventId,
        "webhook-timestamp": String(timestamp),
        "webhook-signature": await signature(
          await this.#options.secrets.open(delivery.secret, delivery.endpointId),
          delivery.eventId,
          timestamp,
          body,
        ),
      },
      body,
      timeoutMs: this.#options.timeoutMs,
      allowPrivate: this.#options.allowPrivate,
    });
    return status >= 200 && status < 300 ? null : `HTTP ${status}`;
  }
}
