CREATE TABLE "adapters" (
	"id" text PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"name" text NOT NULL,
	"base" text NOT NULL,
	"alias" text,
	"traffic_weight" integer DEFAULT 100 NOT NULL,
	"pinned" boolean DEFAULT false NOT NULL,
	"rank" integer NOT NULL,
	"alpha" real NOT NULL,
	"target_modules" text[] NOT NULL,
	"bytes" bigint,
	"sha256" text,
	"blob_key" text NOT NULL,
	"status" text DEFAULT 'uploading' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"deleted_at" timestamp with time zone,
	CONSTRAINT "adapters_traffic_weight_range" CHECK ("adapters"."traffic_weight" between 0 and 100),
	CONSTRAINT "adapters_status_known" CHECK ("adapters"."status" in ('uploading', 'ready', 'failed', 'deleted')),
	CONSTRAINT "adapters_ready_has_blob" CHECK ("adapters"."status" <> 'ready' or ("adapters"."bytes" is not null and "adapters"."sha256" is not null))
);
--> statement-breakpoint
CREATE TABLE "api_keys" (
	"id" text PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"key_hash" text NOT NULL,
	"prefix" text NOT NULL,
	"name" text NOT NULL,
	"scopes" text[] DEFAULT '{}'::text[] NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_used_at" timestamp with time zone,
	"revoked_at" timestamp with time zone,
	CONSTRAINT "api_keys_key_hash_unique" UNIQUE("key_hash")
);
--> statement-breakpoint
CREATE TABLE "base_models" (
	"name" text PRIMARY KEY NOT NULL,
	"architecture" jsonb NOT NULL,
	"context_length" integer NOT NULL,
	"input_price_micros_per_million" integer NOT NULL,
	"output_price_micros_per_million" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "orgs" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "usage_events" (
	"request_id" text PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"api_key_id" text NOT NULL,
	"base" text NOT NULL,
	"adapter" text,
	"input_tokens" integer NOT NULL,
	"output_tokens" integer NOT NULL,
	"cost_micros" bigint NOT NULL,
	"finish_reason" text NOT NULL,
	"started_at" timestamp with time zone NOT NULL,
	"finished_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "adapters" ADD CONSTRAINT "adapters_org_id_orgs_id_fk" FOREIGN KEY ("org_id") REFERENCES "public"."orgs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "adapters" ADD CONSTRAINT "adapters_base_base_models_name_fk" FOREIGN KEY ("base") REFERENCES "public"."base_models"("name") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_org_id_orgs_id_fk" FOREIGN KEY ("org_id") REFERENCES "public"."orgs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "adapters_org_name_live_idx" ON "adapters" USING btree ("org_id","name") WHERE "adapters"."deleted_at" is null;--> statement-breakpoint
CREATE INDEX "adapters_org_alias_idx" ON "adapters" USING btree ("org_id","alias");--> statement-breakpoint
CREATE INDEX "api_keys_org_idx" ON "api_keys" USING btree ("org_id");--> statement-breakpoint
CREATE INDEX "usage_events_org_day_idx" ON "usage_events" USING btree ("org_id",(("finished_at" at time zone 'UTC')::date));--> statement-breakpoint
CREATE INDEX "usage_events_org_adapter_idx" ON "usage_events" USING btree ("org_id","adapter","finished_at");--> statement-breakpoint
CREATE INDEX "usage_events_org_key_idx" ON "usage_events" USING btree ("org_id","api_key_id","finished_at");