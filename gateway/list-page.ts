// The Files and Batch APIs' lists: newest first, a page of `limit` after the row `after`, in OpenAI's list
// shape. Rows are ordered by creation time and then id, so a page boundary never splits or repeats a row.
import { and, eq, lt, or, type SQL } from "drizzle-orm";
import type { PgColumn } from "drizzle-orm/pg-core";
import type { ListPage } from "../schema/batch-api.ts";

/** Rows after the cursor row in newest-first order: older, or as old with a smaller id. */
export function after(createdAt: PgColumn, id: PgColumn, cursor: { createdAt: Date; id: string }): SQL {
  return or(lt(createdAt, cursor.createdAt), and(eq(createdAt, cursor.createdAt), lt(id, cursor.id)))!;
}

/** A page from up to limit + 1 rows read (the extra one only says there are more). */
export function listPage<T extends { id: string }>(rows: readonly T[], limit: number): ListPage<T> {
  const data = rows.slice(0, limit);
  return {
    object: "list",
    data,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
    has_more: rows.length > limit,
  };
}
