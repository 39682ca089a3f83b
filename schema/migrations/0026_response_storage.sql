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
-- (schema/db.ts response_storage): the row as JSON in UTF-8, as Postgres prints it.
CREATE FUNCTION "count_response_storage"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  delta bigint := 0;
  kept record;
BEGIN
  IF TG_OP <> 'DELETE' THEN
    delta := delta + octet_length(to_jsonb(NEW)::text);
    kept := NEW;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    delta := delta - octet_length(to_jsonb(OLD)::text);
    kept := OLD;
  END IF;
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
    SELECT "org_id", hashtext("id") & 15 AS "shard", octet_length(to_jsonb(r)::text) AS "bytes" FROM "stored_responses" AS r
    UNION ALL
    SELECT "org_id", hashtext("id") & 15, octet_length(to_jsonb(c)::text) FROM "stored_chat_completions" AS c
  ) AS kept GROUP BY 1, 2;
