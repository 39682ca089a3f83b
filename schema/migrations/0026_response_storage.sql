CREATE TABLE "response_storage" (
	"org_id" text NOT NULL,
	"shard" integer NOT NULL,
	"bytes" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "response_storage_org_id_shard_pk" PRIMARY KEY("org_id","shard")
);
--> statement-breakpoint
ALTER TABLE "orgs" ADD COLUMN "response_storage_limit" bigint;--> statement-breakpoint
ALTER TABLE "stored_responses" ADD COLUMN "event_bytes" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "response_storage" ADD CONSTRAINT "response_storage_org_id_orgs_id_fk" FOREIGN KEY ("org_id") REFERENCES "public"."orgs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "orgs" ADD CONSTRAINT "orgs_response_storage_limit_nonnegative" CHECK ("orgs"."response_storage_limit" >= 0);--> statement-breakpoint
-- What the event logs written before this migration hold (response_events, as stored).
UPDATE "stored_responses" SET "event_bytes" = "logged"."bytes"
  FROM (SELECT "response_id", sum(pg_column_size("event")) AS "bytes" FROM "response_events" GROUP BY 1) AS "logged"
  WHERE "stored_responses"."id" = "logged"."response_id";--> statement-breakpoint
-- Counts what each write of a stored response or chat completion adds or frees into its org's shard
-- (schema/db.ts response_storage): the row's JSON columns as Postgres stores them (compressed where
-- large), which pg_column_size reads without decompressing them, so counting costs the write nothing,
-- and a response's event log (event_bytes). Deferred to the commit, so a transaction takes a counter
-- row's lock last and holds it only while it commits. A transaction counts all it changes of one org into
-- one shard, picked by its transaction id, so it holds at most one counter row per org (two writers of an
-- org cannot take its shards in opposite orders) and an org's writers spread over its 16 rows. A shard
-- may go below zero (bytes counted in one shard are freed in another); the org's sum is what it holds.
CREATE FUNCTION "count_response_storage"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  delta bigint := 0;
  kept record;
BEGIN
  IF TG_TABLE_NAME = 'stored_responses' THEN
    IF TG_OP <> 'DELETE' THEN
      delta := delta + pg_column_size(NEW."response") + pg_column_size(NEW."conversation")
        + pg_column_size(NEW."ancestors") + NEW."event_bytes";
    END IF;
    IF TG_OP <> 'INSERT' THEN
      delta := delta - pg_column_size(OLD."response") - pg_column_size(OLD."conversation")
        - pg_column_size(OLD."ancestors") - OLD."event_bytes";
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
      VALUES (kept."org_id", (txid_current() % 16)::integer, delta)
      ON CONFLICT ("org_id", "shard") DO UPDATE SET "bytes" = "response_storage"."bytes" + delta;
  END IF;
  RETURN NULL;
END
$$;--> statement-breakpoint
CREATE CONSTRAINT TRIGGER "stored_responses_count_storage" AFTER INSERT OR UPDATE OR DELETE ON "stored_responses"
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "count_response_storage"();--> statement-breakpoint
CREATE CONSTRAINT TRIGGER "stored_chat_completions_count_storage" AFTER INSERT OR UPDATE OR DELETE ON "stored_chat_completions"
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "count_response_storage"();--> statement-breakpoint
-- Adds what each statement writes into response_events to its responses' event_bytes (which the trigger
-- above counts). The sizes are read from the table, not from the statement's new rows: those are not yet
-- compressed. The events go when their response is deleted (ON DELETE CASCADE), its event_bytes with it.
CREATE FUNCTION "count_response_events"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE "stored_responses" SET "event_bytes" = "stored_responses"."event_bytes" + "logged"."bytes"
    FROM (
      SELECT e."response_id", sum(pg_column_size(e."event")) AS "bytes"
        FROM "response_events" AS e JOIN "new_events" AS n
          ON n."response_id" = e."response_id" AND n."sequence_number" = e."sequence_number"
        GROUP BY 1
    ) AS "logged"
    WHERE "stored_responses"."id" = "logged"."response_id";
  RETURN NULL;
END
$$;--> statement-breakpoint
CREATE TRIGGER "response_events_count_storage" AFTER INSERT ON "response_events"
  REFERENCING NEW TABLE AS "new_events" FOR EACH STATEMENT EXECUTE FUNCTION "count_response_events"();--> statement-breakpoint
-- What was stored before this migration (the triggers hold the tables' writes back until it commits).
INSERT INTO "response_storage" ("org_id", "shard", "bytes")
  SELECT "org_id", "shard", sum("bytes") FROM (
    SELECT "org_id", hashtext("id") & 15 AS "shard",
      pg_column_size("response") + pg_column_size("conversation") + pg_column_size("ancestors") + "event_bytes" AS "bytes"
      FROM "stored_responses"
    UNION ALL
    SELECT "org_id", hashtext("id") & 15,
      pg_column_size("completion") + pg_column_size("messages") + pg_column_size("metadata")
      FROM "stored_chat_completions"
  ) AS "kept" GROUP BY 1, 2;
