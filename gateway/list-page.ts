// OpenAI's lists (files, batches, stored chat completions, a response's input items, a stored chat
// completion's messages): a page of `limit` after the entry `after`, in OpenAI's list shape. Rows are ordered
// by creation time and then id, so a page boundary never splits or repeats a row.
import { and, eq, gt, lt, or, type SQL } from "drizzle-orm";
import type { PgColumn } from "drizzle-orm/pg-core";
import type { ListPage } from "../schema/batch-api.ts";
import { invalidRequest } from "./errors.ts";

export type ListOrder = "asc" | "desc";

/**
 * Rows after the cursor row in the list's order: newest first (the default), older or as old with a smaller
 * id; oldest first, newer or as new with a larger id.
 */
export function after(
  createdAt: PgColumn,
  id: PgColumn,
  cursor: { createdAt: Date; id: string },
  order: ListOrder = "desc",
): SQL {
  const beyond = order === "desc" ? lt : gt;
  return or(
    beyond(createdAt, cursor.createdAt),
    and(eq(createdAt, cursor.createdAt), beyond(id, cursor.id)),
  )!;
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

/**
 * A page of a list held whole (in oldest-first order): `limit` entries after the one `after`, in `order`;
 * an `after` that is not in the list is a 400 naming `what` it should have been.
 */
export function pageOf<T extends { id: string }>(
  entries: readonly T[],
  query: { limit: number; order: ListOrder; after?: string | undefined },
  what: string,
): ListPage<T> {
  const ordered = query.order === "desc" ? [...entries].reverse() : entries;
  let start = 0;
  if (query.after !== undefined) {
    const at = ordered.findIndex((entry) => entry.id === query.after);
    if (at < 0) throw invalidRequest(`No ${what} found with id '${query.after}'.`, "after");
    start = at + 1;
  }
  return listPage(ordered.slice(start, start + query.limit + 1), query.limit);
}
