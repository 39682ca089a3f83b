ALTER TABLE "base_models" ADD COLUMN "batch_price_percent" integer DEFAULT 100 NOT NULL;--> statement-breakpoint
ALTER TABLE "usage_events" ADD COLUMN "batch" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "base_models" ADD CONSTRAINT "base_models_batch_price_percent_range" CHECK ("base_models"."batch_price_percent" between 0 and 100);