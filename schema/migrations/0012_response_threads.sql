ALTER TABLE "stored_responses" ADD COLUMN "previous_id" text;--> statement-breakpoint
ALTER TABLE "stored_responses" ADD COLUMN "thread_id" text;--> statement-breakpoint
UPDATE "stored_responses" SET "thread_id" = "id";--> statement-breakpoint
ALTER TABLE "stored_responses" ALTER COLUMN "thread_id" SET NOT NULL;--> statement-breakpoint
CREATE INDEX "stored_responses_thread_idx" ON "stored_responses" USING btree ("org_id","thread_id");--> statement-breakpoint
CREATE INDEX "stored_responses_previous_idx" ON "stored_responses" USING btree ("previous_id");
