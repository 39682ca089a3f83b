CREATE TABLE "response_events" (
	"response_id" text NOT NULL,
	"sequence_number" integer NOT NULL,
	"event" jsonb NOT NULL,
	CONSTRAINT "response_events_response_id_sequence_number_pk" PRIMARY KEY("response_id","sequence_number")
);
--> statement-breakpoint
ALTER TABLE "response_events" ADD CONSTRAINT "response_events_response_id_stored_responses_id_fk" FOREIGN KEY ("response_id") REFERENCES "public"."stored_responses"("id") ON DELETE cascade ON UPDATE no action;