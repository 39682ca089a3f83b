// OpenAI's lists (files, batches, stored chat completions, a response's input items, a stored chat
// completion's messages): a page of `limit` after the entry `after`, in OpenAI's list shape. Rows are ordered
// by creation time and then id, so a page boundary never splits or repeats a row.
import { and, eq, gt, lt, or, type SQL } from "drizzle-orm";
import type { PgColumn, PgTable } from "drizzle-orm/pg-core";
import type { Db } from "../db/open.ts";
import type { ListPage } from "../schema/batch-api.ts";
import { invalidRequest } from "./errors.ts";

export type ListOrder = "asc" | "desc";

/** A table a list pages through: rows with an id, in order of creation. */
type ListedTable = PgTable & { id: PgColumn; createdAt: PgColumn };

/**
 * The condition for the rows after the row `id` (among those `scope` selects) in the list's order: newest
 * first (the default), older or as old with a smaller id; oldest first, newer or as new with a larger id.
 * Null when there is no such row: each list refuses that cursor in its own words.
 */
export async function afterRow(
  db: Pick<Db, "select">,
  table: ListedTable,
  scope: SQL | undefined,
  id: string,
  order: ListOrder = "desc",
): Promise<SQL | null> {
  const [cursor] = await db
    .select({ createdAt: table.createdAt })
    .from(table)
    .where(and(scope, eq(table.id, id)));
  if (!cursor) return null;
  const createdAt = cursor.createdAt as Date;
  const beyond = order === "desc" ? lt : gt;
  return or(beyond(table.createdAt, createdAt), and(eq(table.createdAt, createdAt), beyond(table.id, id)))!;
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
 * an `after` that is not in the list is a 400 naming `what` it should have been. A list that holds an id
 * twice (a response stored before repeated ids were refused) pages on from its last place, so a client
 * following the pages always reaches the end.
 */
export function pageOf<T extends { id: string }>(
  entries: readonly T[],
  query: { limit: number; order: ListOrder; after?: string | undefined },
  what: string,
): ListPage<T> {
  const ordered = query.order === "desc" ? [...entries].reverse() : entries;
  let start = 0;
  if (query.after !== undefined) {
    const at = ordered.findLastIndex((entry) => entry.id === query.after);
    if (at < 0) throw invalidRequest(`No ${what} found with id '${query.after}'.`, "after");
    start = at + 1;
  }
  return listPage(ordered.slice(start, start + query.limit + 1), query.limit);
}
