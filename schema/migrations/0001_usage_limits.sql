CREATE TABLE "api_key_rate_windows" (
	"api_key_id" text PRIMARY KEY NOT NULL,
	"window_start" timestamp with time zone NOT NULL,
	"requests" integer NOT NULL,
	"tokens" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "org_token_months" (
	"org_id" text NOT NULL,
	"month" text NOT NULL,
	"used_tokens" bigint DEFAULT 0 NOT NULL,
	"reserved_tokens" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "org_token_months_org_id_month_pk" PRIMARY KEY("org_id","month")
);
--> statement-breakpoint
CREATE TABLE "quota_reservations" (
	"request_id" text PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"month" text NOT NULL,
	"tokens" bigint NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "api_keys" ADD COLUMN "requests_per_minute" integer;--> statement-breakpoint
ALTER TABLE "api_keys" ADD COLUMN "tokens_per_minute" integer;--> statement-breakpoint
ALTER TABLE "orgs" ADD COLUMN "monthly_token_quota" bigint;--> statement-breakpoint
CREATE INDEX "quota_reservations_org_expiry_idx" ON "quota_reservations" USING btree ("org_id","expires_at");--> statement-breakpoint
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_requests_per_minute_positive" CHECK ("api_keys"."requests_per_minute" > 0);--> statement-breakpoint
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_tokens_per_minute_positive" CHECK ("api_keys"."tokens_per_minute" > 0);--> statement-breakpoint
ALTER TABLE "orgs" ADD CONSTRAINT "orgs_monthly_token_quota_nonnegative" CHECK ("orgs"."monthly_token_quota" >= 0);