ALTER TABLE "batch_requests" ALTER COLUMN "body" SET DATA TYPE json;--> statement-breakpoint
ALTER TABLE "batch_requests" ALTER COLUMN "response" SET DATA TYPE json;