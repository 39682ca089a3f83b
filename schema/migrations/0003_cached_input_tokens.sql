ALTER TABLE "base_models" ADD COLUMN "cached_input_price_micros_per_million" integer;--> statement-breakpoint
ALTER TABLE "usage_events" ADD COLUMN "cached_input_tokens" integer DEFAULT 0 NOT NULL;