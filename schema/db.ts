// The database tables (drizzle, Postgres dialect): orgs, their API keys, base models with prices, adapters
// and usage. Row types are derived from the tables; migrations in schema/migrations are generated from this
// file by drizzle-kit (`npm run db:generate`), never written by hand.
import { sql } from "drizzle-orm";
import {
  type AnyPgColumn,
  bigint,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgTable,
  real,
  text,
  timestamp,
  uniqueIndex,
} from "drizzle-orm/pg-core";

const createdAt = () => timestamp("created_at", { withTimezone: true }).notNull().defaultNow();

export const orgs = pgTable("orgs", {
  /** The slug in model names (`<base>:<org>/<adapter>`), e.g. "acme". */
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  createdAt: createdAt(),
});

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
  },
  (t) => [index("api_keys_org_idx").on(t.orgId)],
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

export const baseModels = pgTable("base_models", {
  /** e.g. "meta/llama-4-maverick" */
  name: text("name").primaryKey(),
  architecture: jsonb("architecture").$type<BaseArchitecture>().notNull(),
  contextLength: integer("context_length").notNull(),
  // Integer micro-dollars per million tokens: money never passes through a float.
  inputPriceMicrosPerMillion: integer("input_price_micros_per_million").notNull(),
  outputPriceMicrosPerMillion: integer("output_price_micros_per_million").notNull(),
  createdAt: createdAt(),
});

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
    outputTokens: integer("output_tokens").notNull(),
    costMicros: bigint("cost_micros", { mode: "number" }).notNull(),
    finishReason: text("finish_reason").notNull(),
    startedAt: timestamp("started_at", { withTimezone: true }).notNull(),
    finishedAt: timestamp("finished_at", { withTimezone: true }).notNull(),
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
