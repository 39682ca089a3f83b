// drizzle-kit: generates the SQL migrations in schema/migrations from the tables in schema/db.ts.
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./schema/db.ts",
  out: "./schema/migrations",
});
