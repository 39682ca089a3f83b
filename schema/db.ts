// The database tables (drizzle, Postgres dialect): orgs, their API keys, base models with prices, adapters,
// usage, stored Responses API responses and chat completions, conversations, webhooks, and the Files and
// Batch APIs' files, batches and batch lines. Row types are derived from the tables; migrations in
// schema/migrations are generated from this file by drizzle-kit (`npm run db:generate`), never written by
// hand.
import { sql } from "drizzle-orm";
import {
  type AnyPgColumn,
  bigint,
  boolean,
  check,
  index,
  integer,
  json,
  jsonb,
  pgTable,
  primaryKey,
  real,
  text,
  timestamp,
  uniqueIndex,
} from "drizzle-orm/pg-core";
import { textSafeJsonb } from "./text-safe-jsonb.ts";

const createdAt = () => timestamp("created_at", { withTimezone: true }).notNull().defaultNow();

export const orgs = pgTable(
  "orgs",
  {
    /** The slug in model names (`<base>:<org>/<adapter>`), e.g. "acme". */
    id: text("id").primaryKey(),
    name: text("name").notNull(),
    /** Most tokens (input + output) the org may use per UTC calendar month; null: no quota. */
    monthlyTokenQuota: bigint("monthly_token_quota", { mode: "number" }),
    /**
     * Whether its requests for `service_tier: "priority"` get the priority tier; false: they run at the
     * standard tier and say so, as OpenAI serves a project without priority processing.
     */
    priorityTier: boolean("priority_tier").notNull().default(true),
    /**
     * Most adapters the org may have pinned on each base (`luminet orgs set-pin-limit`), so that one org
     * cannot take every pinned place of a base its workers share with others; null: only the base's limit.
     */
    pinLimit: integer("pin_limit"),
    /**
     * Most bytes its files, adapters, conversations and stored responses may each hold together (`luminet
     * orgs set-storage-limit`); null: the gateway's --max-org-*-storage.
     */
    fileStorageLimit: bigint("file_storage_limit", { mode: "number" }),
    adapterStorageLimit: bigint("adapter_storage_limit", { mode: "number" }),
    conversationStorageLimit: bigint("conversation_storage_limit", { mode: "number" }),
    responseStorageLimit: bigint("response_storage_limit", { mode: "number" }),
    createdAt: createdAt(),
  },
  (t) => [
    check("orgs_monthly_token_quota_nonnegative", sql`${t.monthlyTokenQuota} >= 0`),
    check("orgs_pin_limit_nonnegative", sql`${t.pinLimit} >= 0`),
    check(
      "orgs_storage_limits_nonnegative",
      sql`${t.fileStorageLimit} >= 0 and ${t.adapterStorageLimit} >= 0 and ${t.conversationStorageLimit} >= 0`,
    ),
    check("orgs_response_storage_limit_nonnegative", sql`${t.responseStorageLimit} >= 0`),
  ],
);

export const apiKeys = pgTable(
  "api_keys",
  {
    id: text("id")
      .primaryKey()
      .$defaultFn(() => crypto.randomUUID()),
    orgId: text("org_id")
      .notNull()
      .references(() => orgs.id),
    /** sha256 of the whole key, lowercase hex; the key itself is shown once and never stored. */
    keyHash: text("key_hash").notNull().unique(),
    /** The first characters of the key, so a person can tell keys apart. */
    prefix: text("prefix").notNull(),
    name: text("name").notNull(),
    scopes: text("scopes").array().notNull().default(sql`'{}'::text[]`),
    createdAt: createdAt(),
    lastUsedAt: timestamp("last_used_at", { withTimezone: true }),
    revokedAt: timestamp("revoked_at", { withTimezone: true }),
    /** Most requests per minute through this key; null: no limit. */
    requestsPerMinute: integer("requests_per_minute"),
    /** Most tokens (prompt + max_tokens, counted at admission) per minute through this key; null: no limit. */
    tokensPerMinute: integer("tokens_per_minute"),
  },
  (t) => [
    index("api_keys_org_idx").on(t.orgId),
    check("api_keys_requests_per_minute_positive", sql`${t.requestsPerMinute} > 0`),
    check("api_keys_tokens_per_minute_positive", sql`${t.tokensPerMinute} > 0`),
  ],
);

/** The shape of a base model, summarised from its config.json. */
export interface BaseArchitecture {
  /** e.g. "LlamaForCausalLM", "Qwen2ForCausalLM" */
  family: string;
  layers: number;
  hiddenSize: number;
  intermediateSize: number;
  attentionHeads: number;
  kvHeads: number;
  headDim: number;
  vocabSize: number;
}

export const baseModels = pgTable(
  "base_models",
  {
    /** e.g. "meta/llama-4-maverick" */
    name: text("name").primaryKey(),
    architecture: jsonb("architecture").$type<BaseArchitecture>().notNull(),
    contextLength: integer("context_length").notNull(),
    // Integer micro-dollars per million tokens: money never passes through a float.
    inputPriceMicrosPerMillion: integer("input_price_micros_per_million").notNull(),
    outputPriceMicrosPerMillion: integer("output_price_micros_per_million").notNull(),
    /**
     * The price of input tokens a worker's prefix cache covered (they skip the prefill); null: the input
     * price, like any other input token.
     */
    cachedInputPriceMicrosPerMillion: integer("cached_input_price_micros_per_million"),
    /** What a Batch API line pays, in percent of the prices above (OpenAI's batches pay 50). */
    batchPricePercent: integer("batch_price_percent").notNull().default(100),
    /** What a priority-tier request pays, in percent of the prices above (a premium: 100 to 1000). */
    priorityPricePercent: integer("priority_price_percent").notNull().default(100),
    createdAt: createdAt(),
  },
  (t) => [
    check("base_models_batch_price_percent_range", sql`${t.batchPricePercent} between 0 and 100`),
    check("base_models_priority_price_percent_range", sql`${t.priorityPricePercent} between 100 and 1000`),
  ],
);

export const adapterStatuses = ["uploading", "ready", "failed", "deleted"] as const;
export type AdapterStatus = (typeof adapterStatuses)[number];

export const adapters = pgTable(
  "adapters",
  {
    id: text("id")
      .primaryKey()
      .$defaultFn(() => crypto.randomUUID()),
    orgId: text("org_id")
      .notNull()
      .references(() => orgs.id),
    /** e.g. "customer-acme-v3"; unique per org among adapters not deleted. */
    name: text("name").notNull(),
    base: text("base")
      .notNull()
      .references(() => baseModels.name),
    /** Versions sharing an alias split the alias's traffic by traffic_weight. */
    alias: text("alias"),
    trafficWeight: integer("traffic_weight").notNull().default(100),
    pinned: boolean("pinned").notNull().default(false),
    rank: integer("rank").notNull(),
    alpha: real("alpha").notNull(),
    targetModules: text("target_modules").array().notNull(),
    // Known once the upload completes; a ready adapter always has both (checked below).
    bytes: bigint("bytes", { mode: "number" }),
    sha256: text("sha256"),
    blobKey: text("blob_key").notNull(),
    /** The registered URL the gateway fetched it from; null for an upload. */
    sourceUrl: text("source_url"),
    status: text("status", { enum: adapterStatuses }).notNull().default("uploading"),
    createdAt: createdAt(),
    deletedAt: timestamp("deleted_at", { withTimezone: true }),
  },
  (t) => [
    uniqueIndex("adapters_org_name_live_idx").on(t.orgId, t.name).where(sql`${t.deletedAt} is null`),
    index("adapters_org_alias_idx").on(t.orgId, t.alias),
    check("adapters_traffic_weight_range", sql`${t.trafficWeight} between 0 and 100`),
    check(
      "adapters_status_known",
      sql`${t.status} in (${sql.join(
        adapterStatuses.map((s) => sql.raw(`'${s}'`)),
        sql`, `,
      )})`,
    ),
    check(
      "adapters_ready_has_blob",
      sql`${t.status} <> 'ready' or (${t.bytes} is not null and ${t.sha256} is not null)`,
    ),
  ],
);

// `at time zone 'UTC'` makes the expression immutable, which an index expression must be.
const utcDay = (finishedAt: AnyPgColumn) => sql<string>`((${finishedAt} at time zone 'UTC')::date)`;

// No foreign keys: a billing row must always insert, even for a key or adapter removed since the request.
export const usageEvents = pgTable(
  "usage_events",
  {
    /** The request id; the meter inserts with ON CONFLICT DO NOTHING so a redelivered event bills once. */
    requestId: text("request_id").primaryKey(),
    orgId: text("org_id").notNull(),
    apiKeyId: text("api_key_id").notNull(),
    base: text("base").notNull(),
    /** The adapter's name; null when the request ran on the base model alone. */
    adapter: text("adapter"),
    inputTokens: integer("input_tokens").notNull(),
    /** Of inputTokens, those the worker's prefix cache covered: billed at the base's cached input price. */
    cachedInputTokens: integer("cached_input_tokens").notNull().default(0),
    outputTokens: integer("output_tokens").notNull(),
    costMicros: bigint("cost_micros", { mode: "number" }).notNull(),
    /** A Batch API line: priced at the base's batch_price_percent. */
    batch: boolean("batch").notNull().default(false),
    /** A priority-tier request: priced at the base's priority_price_percent. */
    priority: boolean("priority").notNull().default(false),
    finishReason: text("finish_reason").notNull(),
    startedAt: timestamp("started_at", { withTimezone: true }).notNull(),
    finishedAt: timestamp("finished_at", { withTimezone: true }).notNull(),
    /**
     * An attempt of a batch line (or background response) that the batch runner ran again after it failed
     * or was cut (meter/waived-usage.ts): its cost is 0 and usage reports leave it out, so the line is
     * billed once, for the attempt that answered. Its tokens stay as the worker counted them (0 when it was
     * waived before its event arrived; that event is then dropped as a duplicate).
     */
    waived: boolean("waived").notNull().default(false),
  },
  (t) => [
    index("usage_events_org_day_idx").on(t.orgId, utcDay(t.finishedAt)),
    index("usage_events_org_adapter_idx").on(t.orgId, t.adapter, t.finishedAt),
    index("usage_events_org_key_idx").on(t.orgId, t.apiKeyId, t.finishedAt),
  ],
);

/**
 * The UTC day ("YYYY-MM-DD") a usage row finished on. Rollups group by this exact expression so Postgres
 * can use the (org, day) index.
 */
export const usageDay = () => utcDay(usageEvents.finishedAt);

/**
 * An org's tokens in one UTC month ("YYYY-MM"): `used` is what the meter billed, `reserved` what requests
 * admitted and not yet metered may still use. Admission reserves with one conditional UPDATE
 * (used + reserved + n <= quota), so parallel requests cannot overshoot the quota; the meter moves each
 * request from reserved to used in the transaction that writes its billing row. No foreign key, like
 * usage_events: metering must never fail on a missing org.
 */
export const orgTokenMonths = pgTable(
  "org_token_months",
  {
    orgId: text("org_id").notNull(),
    month: text("month").notNull(),
    usedTokens: bigint("used_tokens", { mode: "number" }).notNull().default(0),
    reservedTokens: bigint("reserved_tokens", { mode: "number" }).notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.orgId, t.month] })],
);

/**
 * One admitted request's hold on its org's monthly quota, until the meter settles it or it expires (a
 * request that never produced a usage event: dropped before a worker claimed it, a gateway that died).
 */
export const quotaReservations = pgTable(
  "quota_reservations",
  {
    requestId: text("request_id").primaryKey(),
    orgId: text("org_id").notNull(),
    month: text("month").notNull(),
    tokens: bigint("tokens", { mode: "number" }).notNull(),
    expiresAt: timestamp("expires_at", { withTimezone: true }).notNull(),
  },
  (t) => [index("quota_reservations_org_expiry_idx").on(t.orgId, t.expiresAt)],
);

/** A key's current fixed one-minute window of requests and tokens, for its per-minute limits. */
export const apiKeyRateWindows = pgTable("api_key_rate_windows", {
  apiKeyId: text("api_key_id").primaryKey(),
  windowStart: timestamp("window_start", { withTimezone: true }).notNull(),
  requests: integer("requests").notNull(),
  tokens: bigint("tokens", { mode: "number" }).notNull(),
});

/**
 * Responses API responses kept for GET /v1/responses/{id} and previous_response_id (gateway/response-store.ts):
 * the response as answered and the input items it added to the conversation; the rest of what it answered
 * is its previous response's conversation and output, so a chain of N turns stores each item once, not
 * N times; each row lists its chain's earlier ids, so the chain is read in one query. Kept until deleted or
 * past the gateways' retention; deleting a response first writes its whole conversation into the
 * responses that continue it.
 */
export const storedResponses = pgTable(
  "stored_responses",
  {
    /** "resp_<request id>" */
    id: text("id").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => orgs.id),
    response: textSafeJsonb("response").notNull(),
    /** The input items this response added; all it answered when previous_id is null. */
    conversation: textSafeJsonb("conversation").notNull(),
    /** The response it continues (previous_response_id), while that one is stored. */
    previousId: text("previous_id"),
    /** The ids of the responses before it in its chain, oldest first: the rows that rebuild its conversation. */
    ancestors: text("ancestors").array().notNull().default(sql`'{}'::text[]`),
    /**
     * What its stream's event log holds (response_events, as stored): kept by a trigger on that table, so
     * the log counts in its org's response storage with the response (migration 0026).
     */
    eventBytes: bigint("event_bytes", { mode: "number" }).notNull().default(0),
    createdAt: createdAt(),
  },
  // For the retention sweep (gateway/stored-retention.ts) and a response's successors; lookups go by id.
  (t) => [
    index("stored_responses_created_idx").on(t.createdAt),
    index("stored_responses_previous_idx").on(t.previousId),
  ],
);

/**
 * The events of a background response created with `stream: true` (gateway/response-event-log.ts), in
 * order: what its creation's stream and `GET /v1/responses/{id}?stream=true&starting_after=N` replay and
 * follow, whichever gateway runs it. Deleted with their response.
 */
export const responseEvents = pgTable(
  "response_events",
  {
    responseId: text("response_id")
      .notNull()
      .references(() => storedResponses.id, { onDelete: "cascade" }),
    sequenceNumber: integer("sequence_number").notNull(),
    /** The Responses API stream event as sent, its sequence_number included. */
    event: textSafeJsonb("event").notNull(),
  },
  (t) => [primaryKey({ columns: [t.responseId, t.sequenceNumber] })],
);

/**
 * Chat completions created with `store: true`, kept for GET /v1/chat/completions/{id}, its list and its
 * messages (gateway/chat-completion-store.ts): the completion as answered, the messages it answered, and
 * its metadata (the one part a client may change). Kept until deleted or past the gateways' retention, as
 * stored responses are.
 */
export const storedChatCompletions = pgTable(
  "stored_chat_completions",
  {
    /** "chatcmpl-<request id>" */
    id: text("id").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => orgs.id),
    /** The request's model, as the list filters it: "<base>" or "<base>:<org>/<adapter>". */
    model: text("model").notNull(),
    metadata: textSafeJsonb("metadata").notNull().default({}),
    completion: textSafeJsonb("completion").notNull(),
    messages: textSafeJsonb("messages").notNull(),
    createdAt: createdAt(),
  },
  // The list's order within an org, and the retention sweep's.
  (t) => [
    index("stored_chat_completions_org_idx").on(t.orgId, t.createdAt, t.id),
    index("stored_chat_completions_created_idx").on(t.createdAt),
  ],
);

/**
 * Conversations (OpenAI's Conversations API, gateway/conversation-store.ts): a conversation's metadata; its
 * items are conversation_items. Kept until deleted through the API (as at OpenAI, no retention).
 */
export const conversations = pgTable(
  "conversations",
  {
    /** "conv_<request id>" */
    id: text("id").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => orgs.id),
    metadata: textSafeJsonb("metadata").notNull().default({}),
    /** Its metadata's and items' JSON in UTF-8 bytes, as counted when written. */
    bytes: bigint("bytes", { mode: "number" }).notNull().default(0),
    /** The position its next item takes: one past the last ever added (a deleted item leaves a gap). */
    nextPosition: integer("next_position").notNull().default(0),
    createdAt: createdAt(),
  },
  (t) => [index("conversations_org_idx").on(t.orgId)],
);

/**
 * A conversation's items in order (position 0, 1, …; a deleted item leaves a gap): each a Responses API
 * input item with its id, which is unique within the conversation. Deleted with their conversation.
 */
export const conversationItems = pgTable(
  "conversation_items",
  {
    conversationId: text("conversation_id")
      .notNull()
      .references(() => conversations.id, { onDelete: "cascade" }),
    position: integer("position").notNull(),
    id: text("id").notNull(),
    item: textSafeJsonb("item").notNull(),
    /** The item's JSON in UTF-8 bytes, as counted into its conversation's bytes when added. */
    bytes: integer("bytes").notNull().default(0),
    createdAt: createdAt(),
  },
  (t) => [
    primaryKey({ columns: [t.conversationId, t.position] }),
    uniqueIndex("conversation_items_id_idx").on(t.conversationId, t.id),
    // An item_reference names an item by id alone (gateway/response-references.ts).
    index("conversation_items_item_id_idx").on(t.id),
  ],
);

/**
 * What an org's conversations hold, the sum of their `bytes`, in up to 16 rows per org (a conversation
 * counts in shard `hashtext(id) & 15`): writes to different conversations of one org
 * mostly lock different rows, so they do not wait for one another's commits. Kept by the transactions
 * that write the conversations (gateway/conversation-storage-quota.ts).
 */
export const conversationStorage = pgTable(
  "conversation_storage",
  {
    orgId: text("org_id")
      .notNull()
      .references(() => orgs.id),
    shard: integer("shard").notNull(),
    bytes: bigint("bytes", { mode: "number" }).notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.orgId, t.shard] })],
);

/**
 * What an org's stored responses (with their event logs, event_bytes) and stored chat completions hold:
 * each row's JSON columns as Postgres stores them (`pg_column_size`, compressed where large: what they
 * cost the database, read without decompressing them), summed in up to 16 rows per org (each
 * transaction counts into one, picked by its transaction id, so one org's writes seldom wait for one
 * another; one row may be below zero, the org's sum is what it holds). Kept by triggers on
 * stored_responses and stored_chat_completions (migration 0026), deferred to the commit: those rows change
 * in many ways (a background run stored over its queued response, a deleted response's conversation
 * written into the ones that continue it, metadata, retention sweeps), and every one of them is counted,
 * by any gateway version. Read against --max-org-response-storage (gateway/response-storage-quota.ts).
 */
export const responseStorage = pgTable(
  "response_storage",
  {
    orgId: text("org_id")
      .notNull()
      .references(() => orgs.id),
    shard: integer("shard").notNull(),
    bytes: bigint("bytes", { mode: "number" }).notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.orgId, t.shard] })],
);

/**
 * Where an org wants to hear when its batches and background responses end (gateway/webhooks.ts): an
 * HTTPS (or HTTP) URL, the event types it takes (null: all), and the secret its deliveries are signed with
 * (Standard Webhooks, as OpenAI signs them). The secret is kept to sign with, shown once at creation, never
 * listed or logged.
 */
export const webhookEndpoints = pgTable(
  "webhook_endpoints",
  {
    /** "whep_<hex>" */
    id: text("id").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => orgs.id),
    url: text("url").notNull(),
    events: text("events").array(),
    secret: text("secret").notNull(),
    createdAt: createdAt(),
  },
  (t) => [index("webhook_endpoints_org_idx").on(t.orgId)],
);

/**
 * Webhook events waiting to be delivered, or delivered (gateway/webhook-sender.ts): one row per event and
 * endpoint, written in the same transaction as the change it tells of, so none is lost. A sender claims a
 * due row by moving next_attempt_at past its lease; a failed attempt sets when to try again, until the
 * attempts run out (failed_at).
 */
export const webhookDeliveries = pgTable(
  "webhook_deliveries",
  {
    /** The event's id, "evt_<hex>", with the endpoint's: one event may go to several endpoints. */
    eventId: text("event_id").notNull(),
    endpointId: text("endpoint_id")
      .notNull()
      .references(() => webhookEndpoints.id, { onDelete: "cascade" }),
    type: text("type").notNull(),
    /** The event as sent: {"id", "object": "event", "type", "created_at", "data"}. */
    payload: textSafeJsonb("payload").notNull(),
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true }).notNull(),
    deliveredAt: timestamp("delivered_at", { withTimezone: true }),
    failedAt: timestamp("failed_at", { withTimezone: true }),
    lastError: text("last_error"),
    createdAt: createdAt(),
  },
  (t) => [
    primaryKey({ columns: [t.eventId, t.endpointId] }),
    index("webhook_deliveries_due_idx").on(t.nextAttemptAt),
    // An endpoint's next delivery: senders take one per endpoint at a time.
    index("webhook_deliveries_endpoint_due_idx")
      .on(t.endpointId, t.nextAttemptAt)
      .where(sql`${t.deliveredAt} is null and ${t.failedAt} is null`),
  ],
);

/**
 * Idempotency-Key claims and the answers they replay (gateway/idempotency.ts): in the database, so a retry
 * that reaches another gateway process (or Workers isolate) still gets the first answer.
 */
export const idempotencyKeys = pgTable(
  "idempotency_keys",
  {
    /** JSON of [org, path, the header's key]. */
    key: text("key").primaryKey(),
    /** sha256 of the request body: the key may only be replayed for the same body. */
    bodyHash: text("body_hash").notNull(),
    /** "running" while its request runs, then "done" with the answer below. */
    state: text("state").notNull(),
    status: integer("status"),
    body: text("body"),
    contentType: text("content_type"),
    /**
     * A running claim past this was abandoned (its gateway died mid-request) and may be claimed again; a
     * done one is forgotten. Rows past it are swept.
     */
    expiresAt: timestamp("expires_at", { withTimezone: true }).notNull(),
  },
  (t) => [index("idempotency_keys_expires_idx").on(t.expiresAt)],
);

/** Files of the Files API: a batch's input (purpose "batch") and its output and errors ("batch_output"). */
export const files = pgTable(
  "files",
  {
    /** "file-<id>" */
    id: text("id").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => orgs.id),
    purpose: text("purpose").notNull(),
    filename: text("filename").notNull(),
    bytes: integer("bytes").notNull(),
    /** The whole file: JSONL, held in the database so every gateway (Node or Workers) serves it. */
    content: text("content").notNull(),
    createdAt: createdAt(),
    /** Gone from the API from then on, and deleted by the next sweep (file-expiry.ts); null: kept. */
    expiresAt: timestamp("expires_at", { withTimezone: true }),
  },
  (t) => [
    index("files_org_created_idx").on(t.orgId, t.createdAt),
    index("files_expires_idx").on(t.expiresAt).where(sql`${t.expiresAt} is not null`),
  ],
);

/** Batches of the Batch API; their lines are batch_requests. */
export const batches = pgTable(
  "batches",
  {
    /** "batch_<id>" */
    id: text("id").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => orgs.id),
    /** The key that created it: the batch's requests run as this key, within its limits. */
    keyId: text("key_id")
      .notNull()
      .references(() => apiKeys.id),
    /**
     * "batch" (the Batch API's), or "background": one Responses API response created with background
     * true, run by the same runners, listed nowhere; its line's custom_id is the response's id key.
     */
    kind: text("kind").notNull().default("batch"),
    endpoint: text("endpoint").notNull(),
    inputFileId: text("input_file_id").notNull(),
    completionWindow: text("completion_window").notNull(),
    /** in_progress, cancelling, then completed, expired or cancelled (validating and failed never last). */
    status: text("status").notNull(),
    outputFileId: text("output_file_id"),
    errorFileId: text("error_file_id"),
    /** How long its output and error files are kept after they are written (output_expires_after). */
    outputExpiresAfterSeconds: integer("output_expires_after_seconds").notNull().default(2_592_000),
    metadata: textSafeJsonb("metadata"),
    /** Counts by outcome, written when the batch ends; while it runs they are counted from its lines. */
    completedCount: integer("completed_count"),
    failedCount: integer("failed_count"),
    createdAt: createdAt(),
    expiresAt: timestamp("expires_at", { withTimezone: true }).notNull(),
    cancellingAt: timestamp("cancelling_at", { withTimezone: true }),
    finalizingAt: timestamp("finalizing_at", { withTimezone: true }),
    endedAt: timestamp("ended_at", { withTimezone: true }),
  },
  (t) => [
    index("batches_org_created_idx").on(t.orgId, t.createdAt),
    // The runner looks for batches with work left.
    index("batches_status_idx").on(t.status),
  ],
);

/** One line of a batch's input file and what running it gave. */
export const batchRequests = pgTable(
  "batch_requests",
  {
    batchId: text("batch_id")
      .notNull()
      .references(() => batches.id, { onDelete: "cascade" }),
    /** The line's position in the input file, from 0: the output keeps this order. */
    line: integer("line").notNull(),
    customId: text("custom_id").notNull(),
    /**
     * The line's request body. json, not jsonb: jsonb reorders object keys, and a JSON schema's
     * properties are written in the order given.
     */
    body: json("body").notNull(),
    /** The base model its `model` names (gateway/model-id.ts): where the runner may send it, what waits per base. */
    base: text("base").notNull().default(""),
    /** pending, running (claimed by a runner until claimedAt + lease), done, cancelled or expired. */
    status: text("status").notNull(),
    claimedBy: text("claimed_by"),
    claimedAt: timestamp("claimed_at", { withTimezone: true }),
    /**
     * Times the line was put back to run again (a transient refusal, a runner's stop): with the batch and
     * line it makes the request id of each run, so a line taken again after its runner died runs under the
     * same id and is billed once.
     */
    attempts: integer("attempts").notNull().default(0),
    /** The answer's HTTP status and body (an OpenAI error body when it is not 200), once done. */
    statusCode: integer("status_code"),
    /** json too: the answer's keys stay in the order the gateway wrote them. */
    response: json("response"),
    requestId: text("request_id"),
  },
  (t) => [
    primaryKey({ columns: [t.batchId, t.line] }),
    index("batch_requests_status_idx").on(t.batchId, t.status),
    // The runner's next lines of a batch, in line order, without stepping over those already done.
    index("batch_requests_unfinished_idx")
      .on(t.batchId, t.line)
      .where(sql`${t.status} in ('pending', 'running')`),
    index("batch_requests_base_idx").on(t.base, t.status),
  ],
);

export type Org = typeof orgs.$inferSelect;
export type NewOrg = typeof orgs.$inferInsert;
export type ApiKey = typeof apiKeys.$inferSelect;
export type NewApiKey = typeof apiKeys.$inferInsert;
export type BaseModel = typeof baseModels.$inferSelect;
export type NewBaseModel = typeof baseModels.$inferInsert;
export type Adapter = typeof adapters.$inferSelect;
export type NewAdapter = typeof adapters.$inferInsert;
export type UsageEvent = typeof usageEvents.$inferSelect;
export type NewUsageEvent = typeof usageEvents.$inferInsert;
export type OrgTokenMonth = typeof orgTokenMonths.$inferSelect;
export type QuotaReservation = typeof quotaReservations.$inferSelect;
export type FileRow = typeof files.$inferSelect;
export type BatchRow = typeof batches.$inferSelect;
export type BatchRequestRow = typeof batchRequests.$inferSelect;
