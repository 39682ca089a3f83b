ALTER TABLE "conversation_items" ADD COLUMN "bytes" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "conversations" ADD COLUMN "bytes" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "orgs" ADD COLUMN "conversation_bytes" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
-- What conversations written before this migration hold, counted from their stored JSON.
UPDATE "conversation_items" SET "bytes" = octet_length("item"::text);--> statement-breakpoint
UPDATE "conversations" AS c SET "bytes" = octet_length(c."metadata"::text)
  + coalesce((SELECT sum(i."bytes") FROM "conversation_items" AS i WHERE i."conversation_id" = c."id"), 0);--> statement-breakpoint
UPDATE "orgs" AS o SET "conversation_bytes" =
  coalesce((SELECT sum(c."bytes") FROM "conversations" AS c WHERE c."org_id" = o."id"), 0);
