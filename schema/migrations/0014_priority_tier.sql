ALTER TABLE "base_models" ADD COLUMN "priority_price_percent" integer DEFAULT 100 NOT NULL;--> statement-breakpoint
ALTER TABLE "usage_events" ADD COLUMN "priority" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "base_models" ADD CONSTRAINT "base_models_priority_price_percent_range" CHECK ("base_models"."priority_price_percent" between 100 and 1000);