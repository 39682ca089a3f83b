CREATE TABLE "response_storage" (
	"org_id" text NOT NULL,
	"shard" integer NOT NULL,
	"bytes" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "response_storage_org_id_shard_pk" PRIMARY KEY("org_id","shard")
);
--> statement-breakpoint
ALTER TABLE "orgs" ADD COLUMN "response_storage_limit" bigint;--> statement-breakpoint
ALTER TABLE "response_storage" ADD CONSTRAINT "response_storage_org_id_orgs_id_fk" FOREIGN KEY ("org_id") REFERENCES "public"."orgs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "orgs" ADD CONSTRAINT "orgs_response_storage_limit_nonnegative" CHECK ("orgs"."response_storage_limit" >= 0);--> statement-breakpoint
-- Counts what each write of a stored response or chat completion adds or frees into its org's shard
-- (schema/db.ts response_storage): the row's JSON columns as Postgres stores them (compressed where
-- large), which pg_column_size reads without decompressing them, so counting costs the write nothing.
CREATE FUNCTION "count_response_storage"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  delta bigint := 0;
  kept record;
BEGIN
  IF TG_TABLE_NAME = 'stored_responses' THEN
    IF TG_OP <> 'DELETE' THEN
      delta := delta + pg_column_size(NEW."response") + pg_column_size(NEW."conversation") + pg_column_size(NEW."ancestors");
    END IF;
    IF TG_OP <> 'INSERT' THEN
      delta := delta - pg_column_size(OLD."response") - pg_column_size(OLD."conversation") - pg_column_size(OLD."ancestors");
    END IF;
  ELSE
    IF TG_OP <> 'DELETE' THEN
      delta := delta + pg_column_size(NEW."completion") + pg_column_size(NEW."messages") + pg_column_size(NEW."metadata");
    END IF;
    IF TG_OP <> 'INSERT' THEN
      delta := delta - pg_column_size(OLD."completion") - pg_column_size(OLD."messages") - pg_column_size(OLD."metadata");
    END IF;
  END IF;
  IF TG_OP = 'DELETE' THEN kept := OLD; ELSE kept := NEW; END IF;
  IF delta <> 0 THEN
    INSERT INTO "response_storage" ("org_id", "shard", "bytes")
      VALUES (kept."org_id", hashtext(kept."id") & 15, greatest(delta, 0))
      ON CONFLICT ("org_id", "shard") DO UPDATE SET "bytes" = greatest("response_storage"."bytes" + delta, 0);
  END IF;
  RETURN NULL;
END
$$;--> statement-breakpoint
CREATE TRIGGER "stored_responses_count_storage" AFTER INSERT OR UPDATE OR DELETE ON "stored_responses"
  FOR EACH ROW EXECUTE FUNCTION "count_response_storage"();--> statement-breakpoint
CREATE TRIGGER "stored_chat_completions_count_storage" AFTER INSERT OR UPDATE OR DELETE ON "stored_chat_completions"
  FOR EACH ROW EXECUTE FUNCTION "count_response_storage"();--> statement-breakpoint
-- What was stored before this migration (the triggers hold the tables' writes back until it commits).
INSERT INTO "response_storage" ("org_id", "shard", "bytes")
  SELECT "org_id", "shard", sum("bytes") FROM (
    SELECT "org_id", hashtext("id") & 15 AS "shard",
      pg_column_size("response") + pg_column_size("conversation") + pg_column_size("ancestors") AS "bytes"
      FROM "stored_responses"
    UNION ALL
    SELECT "org_id", hashtext("id") & 15,
      pg_column_size("completion") + pg_column_size("messages") + pg_column_size("metadata")
      FROM "stored_chat_completions"
  ) AS "kept" GROUP BY 1, 2;
