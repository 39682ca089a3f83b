ALTER TABLE "orgs" ADD COLUMN "file_storage_limit" bigint;--> statement-breakpoint
ALTER TABLE "orgs" ADD COLUMN "adapter_storage_limit" bigint;--> statement-breakpoint
ALTER TABLE "orgs" ADD COLUMN "conversation_storage_limit" bigint;--> statement-breakpoint
ALTER TABLE "orgs" ADD CONSTRAINT "orgs_storage_limits_nonnegative" CHECK ("orgs"."file_storage_limit" >= 0 and "orgs"."adapter_storage_limit" >= 0 and "orgs"."conversation_storage_limit" >= 0);