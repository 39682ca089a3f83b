// Webhooks as Luminet serves them: an org's admin registers endpoints (POST /v1/webhooks) and hears, signed
// as OpenAI signs its webhooks (Standard Webhooks), when its batches and background responses end. The
// events and their payloads are OpenAI's, so `client.webhooks.unwrap` of the OpenAI SDKs checks and reads
// them.
import { z } from "zod";

export const WEBHOOK_EVENT_TYPES = [
  "batch.completed",
  "batch.cancelled",
  "batch.expired",
  "batch.failed",
  "response.completed",
  "response.incomplete",
  "response.failed",
  "response.cancelled",
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

export const WebhookCreate = z.object({
  url: z
    .url({ protocol: /^https?$/, error: "must be an http:// or https:// URL" })
    .max(2048, "at most 2,048 characters"),
  /** The event types to send; left out: all of them. */
  events: z
    .array(z.enum(WEBHOOK_EVENT_TYPES, { error: `must be one of ${WEBHOOK_EVENT_TYPES.join(", ")}` }))
    .min(1, "must name at least one event type")
    .nullable()
    .optional(),
});
export type WebhookCreate = z.infer<typeof WebhookCreate>;

export interface WebhookObject {
  /** "whep_<hex>" */
  id: string;
  object: "webhook_endpoint";
  url: string;
  /** The event types it takes; null: all. */
  events: WebhookEventType[] | null;
  created_at: number;
}

/** What GET /v1/webhooks answers: the org's endpoints, oldest first. */
export interface WebhookList {
  object: "list";
  data: WebhookObject[];
}

/** What creating an endpoint answers, the only time its signing secret is shown. */
export type CreatedWebhook = WebhookObject & { secret: string };

export interface WebhookDeleted {
  id: string;
  object: "webhook_endpoint.deleted";
  deleted: true;
}

/** An event as it is delivered (OpenAI's shape). */
export interface WebhookEvent {
  /** "evt_<hex>" */
  id: string;
  object: "event";
  type: WebhookEventType;
  created_at: number;
  /** The batch's or response's id. */
  data: { id: string };
}
