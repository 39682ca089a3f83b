ALTER TABLE "stored_responses" ADD COLUMN "previous_id" text;--> statement-breakpoint
ALTER TABLE "stored_responses" ADD COLUMN "ancestors" text[] DEFAULT '{}'::text[] NOT NULL;--> statement-breakpoint
CREATE INDEX "stored_responses_previous_idx" ON "stored_responses" USING btree ("previous_id");