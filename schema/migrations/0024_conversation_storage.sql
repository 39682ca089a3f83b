CREATE TABLE "conversation_storage" (
	"org_id" text NOT NULL,
	"shard" integer NOT NULL,
	"bytes" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "conversation_storage_org_id_shard_pk" PRIMARY KEY("org_id","shard")
);
--> statement-breakpoint
ALTER TABLE "conversation_items" ADD COLUMN "bytes" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "conversations" ADD COLUMN "bytes" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "conversations" ADD COLUMN "next_position" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "conversation_storage" ADD CONSTRAINT "conversation_storage_org_id_orgs_id_fk" FOREIGN KEY ("org_id") REFERENCES "public"."orgs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
-- What conversations written before this migration hold, counted from their stored JSON, each in the
-- shard its id hashes to (gateway/conversation-storage-quota.ts: hashtext(id) & 15), and where each
-- one's next item goes.
UPDATE "conversation_items" SET "bytes" = octet_length("item"::text);--> statement-breakpoint
UPDATE "conversations" AS c SET "bytes" = octet_length(c."metadata"::text)
  + coalesce((SELECT sum(i."bytes") FROM "conversation_items" AS i WHERE i."conversation_id" = c."id"), 0),
  "next_position" = coalesce((SELECT max(i."position") + 1 FROM "conversation_items" AS i WHERE i."conversation_id" = c."id"), 0);--> statement-breakpoint
INSERT INTO "conversation_storage" ("org_id", "shard", "bytes")
  SELECT "org_id", hashtext("id") & 15, sum("bytes") FROM "conversations" GROUP BY 1, 2;
