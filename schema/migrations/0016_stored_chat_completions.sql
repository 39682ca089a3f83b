CREATE TABLE "stored_chat_completions" (
	"id" text PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"model" text NOT NULL,
	"metadata" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"completion" jsonb NOT NULL,
	"messages" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "stored_chat_completions" ADD CONSTRAINT "stored_chat_completions_org_id_orgs_id_fk" FOREIGN KEY ("org_id") REFERENCES "public"."orgs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "stored_chat_completions_org_idx" ON "stored_chat_completions" USING btree ("org_id","created_at","id");--> statement-breakpoint
CREATE INDEX "stored_chat_completions_created_idx" ON "stored_chat_completions" USING btree ("created_at");