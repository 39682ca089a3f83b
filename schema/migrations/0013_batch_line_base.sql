ALTER TABLE "batch_requests" ADD COLUMN "base" text DEFAULT '' NOT NULL;--> statement-breakpoint
UPDATE "batch_requests" SET "base" = regexp_replace(coalesce("body"->>'model', ''), ':[^:/]+/[^:/]+$', '');--> statement-breakpoint
CREATE INDEX "batch_requests_base_idx" ON "batch_requests" USING btree ("base","status");
