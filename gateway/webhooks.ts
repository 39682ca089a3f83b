// An org's webhook endpoints (schema/db.ts webhook_endpoints) and the events queued for them: created,
// listed and deleted through /v1/webhooks; an event is queued, one delivery row per endpoint that takes
// its type, in the transaction that makes the change it tells of (gateway/batch-runner.ts), and
// gateway/webhook-sender.ts delivers it. Functions of the request's database handle.
import { and, asc, desc, eq } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { webhookDeliveries, webhookEndpoints } from "../schema/db.ts";
import type {
  CreatedWebhook,
  WebhookCreate,
  WebhookEvent,
  WebhookEventType,
  WebhookObject,
} from "../schema/webhook-api.ts";
import type { GatewayDeps } from "./deps.ts";
import { invalidRequest } from "./errors.ts";
import { SecretBox } from "./secret-box.ts";
import { privateHost } from "./webhook-address.ts";

type EndpointRow = typeof webhookEndpoints.$inferSelect;

function webhookObject(row: EndpointRow): WebhookObject {
  return {
    id: row.id,
    object: "webhook_endpoint",
    url: row.url,
    events: row.events as WebhookEventType[] | null,
    created_at: Math.floor(row.createdAt.getTime() / 1000),
  };
}

/** A Standard Webhooks secret: "whsec_" and 32 random bytes in base64. */
function newSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return `whsec_${btoa(String.fromCharCode(...bytes))}`;
}

/** What registering an endpoint needs of the gateway: its database, ids, clock and the operator's choice. */
export type WebhookDeps = Pick<
  GatewayDeps,
  "db" | "newRequestId" | "now" | "allowPrivateWebhooks" | "secrets"
>;

/**
 * Registers an endpoint (the webhook API and the dashboard alike). A URL naming this host or a private
 * address is refused (400 on `url`) unless the operator allows private webhooks.
 */
export async function createWebhook(
  deps: WebhookDeps,
  orgId: string,
  request: WebhookCreate,
): Promise<CreatedWebhook> {
  if (!deps.allowPrivateWebhooks && privateHost(new URL(request.url).hostname)) {
    throw invalidRequest(
      "url must be a public address: this host and private networks are refused (the operator can allow them).",
      "url",
    );
  }
  const id = `whep_${deps.newRequestId()}`;
  const secret = newSecret();
  const now = new Date(deps.now());
  const [row] = await deps.db
    .insert(webhookEndpoints)
    .values({
      id,
      orgId,
      url: request.url,
      events: request.events ? [...new Set(request.events)] : null,
      secret: await deps.secrets.seal(secret, id),
      createdAt: now,
    })
    .returning();
  return { ...webhookObject(row!), secret };
}

/** The org's endpoints, oldest first, without their secrets. */
export async function listWebhooks(db: Pick<Db, "select">, orgId: string): Promise<WebhookObject[]> {
  const rows = await db
    .select()
    .from(webhookEndpoints)
    .where(eq(webhookEndpoints.orgId, orgId))
    .orderBy(asc(webhookEndpoints.createdAt), asc(webhookEndpoints.id));
  return rows.map(webhookObject);
}

/** Deletes the endpoint and what it had not been sent; false when the org has none by this id. */
export async function deleteWebhook(db: Pick<Db, "delete">, orgId: string, id: string): Promise<boolean> {
  const deleted = await db
    .delete(webhookEndpoints)
    .where(and(eq(webhookEndpoints.orgId, orgId), eq(webhookEndpoints.id, id)))
    .returning({ id: webhookEndpoints.id });
  return deleted.length > 0;
}

/**
 * Queues an event for every endpoint of the org that takes its type, due at once. `db` is the transaction
 * that makes the change the event tells of, so the event is queued exactly when the change is made.
 */
export async function queueEvent(
  db: Pick<Db, "select" | "insert">,
  orgId: string,
  event: { id: string; type: WebhookEventType; subject: string; at: Date },
): Promise<void> {
  const endpoints = await db
    .select({ id: webhookEndpoints.id, events: webhookEndpoints.events })
    .from(webhookEndpoints)
    .where(eq(webhookEndpoints.orgId, orgId));
  const takers = endpoints.filter(
    (endpoint) => endpoint.events === null || endpoint.events.includes(event.type),
  );
  if (takers.length === 0) return;
  const payload: WebhookEvent = {
    id: event.id,
    object: "event",
    type: event.type,
    created_at: Math.floor(event.at.getTime() / 1000),
    data: { id: event.subject },
  };
  await db.insert(webhookDeliveries).values(
    takers.map((endpoint) => ({
      eventId: event.id,
      endpointId: endpoint.id,
      type: event.type,
      payload,
      nextAttemptAt: event.at,
      createdAt: event.at,
    })),
  );
}

/** A delivery as the dashboard shows it. */
export interface DeliveryView {
  eventId: string;
  endpointId: string;
  type: string;
  subject: string;
  state: "delivered" | "retrying" | "failed";
  attempts: number;
  lastError: string | null;
  createdAt: Date;
  nextAttemptAt: Date;
}

/** The org's latest deliveries, newest first: what was sent, what is being retried and why, what failed. */
export async function recentDeliveries(
  db: Pick<Db, "select">,
  orgId: string,
  limit: number,
): Promise<DeliveryView[]> {
  const rows = await db
    .select({ delivery: webhookDeliveries })
    .from(webhookDeliveries)
    .innerJoin(webhookEndpoints, eq(webhookEndpoints.id, webhookDeliveries.endpointId))
    .where(eq(webhookEndpoints.orgId, orgId))
    .orderBy(desc(webhookDeliveries.createdAt), asc(webhookDeliveries.endpointId))
    .limit(limit);
  return rows.map(({ delivery }) => ({
    eventId: delivery.eventId,
    endpointId: delivery.endpointId,
    type: delivery.type,
    subject: (delivery.payload as WebhookEvent).data.id,
    state: delivery.deliveredAt ? "delivered" : delivery.failedAt ? "failed" : "retrying",
    attempts: delivery.attempts,
    lastError: delivery.lastError,
    createdAt: delivery.createdAt,
    nextAttemptAt: delivery.nextAttemptAt,
  }));
}

/** What sealWebhookSecrets did: secrets sealed that were kept unsealed, and sealed again from a previous key. */
export interface SealedSecrets {
  sealed: number;
  resealed: number;
}

/**
 * Seals under `secrets`' current key (it must have one) the signing secrets kept unsealed (endpoints
 * created before LUMINET_SECRETS_KEY was set) or sealed under one of its previous keys (rotation). A row
 * changed meanwhile is left as it is; one that opens with none of the keys throws, naming the endpoint,
 * before anything is written.
 */
export async function sealWebhookSecrets(
  db: Pick<Db, "select" | "update">,
  secrets: SecretBox,
): Promise<SealedSecrets> {
  if (!secrets.sealing) throw new Error("LUMINET_SECRETS_KEY is not set: there is nothing to seal with");
  const rows = await db
    .select({ id: webhookEndpoints.id, secret: webhookEndpoints.secret })
    .from(webhookEndpoints);
  // Every secret opened first: one that no key opens stops the run before anything is written.
  const opened: { id: string; secret: string; stored: string }[] = [];
  for (const row of rows) {
    const { secret, reseal } = await secrets.opened(row.secret, row.id).catch((error: unknown) => {
      throw new Error(`endpoint ${row.id}: ${error instanceof Error ? error.message : String(error)}`);
    });
    if (reseal) opened.push({ id: row.id, secret, stored: row.secret });
  }
  const done: SealedSecrets = { sealed: 0, resealed: 0 };
  for (const row of opened) {
    const changed = await db
      .update(webhookEndpoints)
      .set({ secret: await secrets.seal(row.secret, row.id) })
      .where(and(eq(webhookEndpoints.id, row.id), eq(webhookEndpoints.secret, row.stored)))
      .returning({ id: webhookEndpoints.id });
    if (changed.length > 0) done[SecretBox.isSealed(row.stored) ? "resealed" : "sealed"]++;
  }
  return done;
}
