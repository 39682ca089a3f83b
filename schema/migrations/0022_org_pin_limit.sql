ALTER TABLE "orgs" ADD COLUMN "pin_limit" integer;--> statement-breakpoint
ALTER TABLE "orgs" ADD CONSTRAINT "orgs_pin_limit_nonnegative" CHECK ("orgs"."pin_limit" >= 0);