// Where chat completions created with `store: true` are kept: one row per completion in the gateway's
// database (schema/db.ts stored_chat_completions), scoped to its org, holding the completion as answered,
// the messages it answered and its metadata. Functions of the request's database handle, as the Workers
// entry opens one per request.
import { and, asc, desc, eq, inArray, lt, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { type ChatCompletion, type ChatMessageIn, contentPartsText, type Metadata } from "../schema/api.ts";
import type { ListPage } from "../schema/batch-api.ts";
import { storedChatCompletions } from "../schema/db.ts";
import type {
  ChatCompletionListQuery,
  ChatMessagesQuery,
  StoredChatCompletion,
  StoredChatMessage,
  StoredRequest,
} from "../schema/stored-chat-api.ts";
import { storableJson } from "../schema/text-safe-jsonb.ts";
import { invalidRequest } from "./errors.ts";
import { afterRow, listPage, pageOf } from "./list-page.ts";

export interface NewChatCompletion {
  completion: ChatCompletion;
  request: StoredRequest;
  messages: readonly ChatMessageIn[];
  metadata: Metadata;
  /** When its request came (in ms: the list's order), as the gateway's clock and the retention sweep read it. */
  createdAt: Date;
}

export async function saveChatCompletion(
  db: Pick<Db, "insert">,
  orgId: string,
  saved: NewChatCompletion,
): Promise<void> {
  const { completion, request, messages, metadata, createdAt } = saved;
  await db.insert(storedChatCompletions).values({
    id: completion.id,
    orgId,
    model: completion.model,
    metadata,
    completion: { ...completion, ...request },
    messages,
    createdAt,
  });
}

type Row = typeof storedChatCompletions.$inferSelect;

function readBack(row: Pick<Row, "completion" | "metadata">): StoredChatCompletion {
  return { ...(row.completion as ChatCompletion & StoredRequest), metadata: row.metadata as Metadata };
}

const byId = (orgId: string, id: string) =>
  and(eq(storedChatCompletions.orgId, orgId), eq(storedChatCompletions.id, id));

/** The org's stored completion with this id; null when there is none (or it is another org's). */
export async function loadChatCompletion(
  db: Pick<Db, "select">,
  orgId: string,
  id: string,
): Promise<StoredChatCompletion | null> {
  const [row] = await db
    .select({ completion: storedChatCompletions.completion, metadata: storedChatCompletions.metadata })
    .from(storedChatCompletions)
    .where(byId(orgId, id));
  return row ? readBack(row) : null;
}

/**
 * A page of the org's stored completions, oldest first unless asked otherwise, of one model and holding
 * every metadata pair asked for; `after` names the last completion of the page before (400 when the org
 * has none by that id).
 */
export async function listChatCompletions(
  db: Pick<Db, "select">,
  orgId: string,
  query: ChatCompletionListQuery,
): Promise<ListPage<StoredChatCompletion>> {
  const { createdAt, id } = storedChatCompletions;
  const conditions = [eq(storedChatCompletions.orgId, orgId)];
  if (query.model !== undefined) conditions.push(eq(storedChatCompletions.model, query.model));
  if (Object.keys(query.metadata).length > 0) {
    conditions.push(sql`${storedChatCompletions.metadata} @> ${storableJson(query.metadata)}::jsonb`);
  }
  if (query.after !== undefined) {
    const scope = eq(storedChatCompletions.orgId, orgId);
    const later = await afterRow(db, storedChatCompletions, scope, query.after, query.order);
    if (!later) throw invalidRequest(`No chat completion found with id '${query.after}'.`, "after");
    conditions.push(later);
  }
  const direction = query.order === "desc" ? desc : asc;
  const rows = await db
    .select({ completion: storedChatCompletions.completion, metadata: storedChatCompletions.metadata })
    .from(storedChatCompletions)
    .where(and(...conditions))
    .orderBy(direction(createdAt), direction(id))
    .limit(query.limit + 1);
  return listPage(rows.map(readBack), query.limit);
}

/**
 * Replaces the org's stored completion's metadata: the completion as it now reads; null when there is
 * none.
 */
export async function setChatMetadata(
  db: Pick<Db, "update">,
  orgId: string,
  id: string,
  metadata: Metadata,
): Promise<StoredChatCompletion | null> {
  const [row] = await db
    .update(storedChatCompletions)
    .set({ metadata })
    .where(byId(orgId, id))
    .returning({ completion: storedChatCompletions.completion, metadata: storedChatCompletions.metadata });
  return row ? readBack(row) : null;
}

/** False when the org has no stored completion with this id. */
export async function dropChatCompletion(
  db: Pick<Db, "delete">,
  orgId: string,
  id: string,
): Promise<boolean> {
  const deleted = await db
    .delete(storedChatCompletions)
    .where(byId(orgId, id))
    .returning({ id: storedChatCompletions.id });
  return deleted.length > 0;
}

/**
 * A page of the messages the org's stored completion answered, in the request's order unless asked
 * otherwise; null when there is no such completion.
 */
export async function chatMessagePage(
  db: Pick<Db, "select">,
  orgId: string,
  id: string,
  query: ChatMessagesQuery,
): Promise<ListPage<StoredChatMessage> | null> {
  const [row] = await db
    .select({ messages: storedChatCompletions.messages })
    .from(storedChatCompletions)
    .where(byId(orgId, id));
  if (!row) return null;
  const messages = (row.messages as ChatMessageIn[]).map((message, k) => storedMessage(id, k, message));
  return pageOf(messages, query, "message");
}

/**
 * A request's message as OpenAI lists a stored one: with an id, its parts joined into `content` (an
 * assistant's refusal part as its text, as the template got it).
 */
function storedMessage(completionId: string, index: number, message: ChatMessageIn): StoredChatMessage {
  const { role, content, name, tool_calls, tool_call_id, reasoning_content } = message;
  return {
    id: `${completionId}-${index}`,
    role,
    content: typeof content === "string" || content === null ? content : contentPartsText(content),
    name: name ?? null,
    // Admitted messages hold only text and refusal parts (gateway/admission.ts).
    content_parts: Array.isArray(content)
      ? content.map((part) =>
          part.type === "refusal"
            ? { type: "refusal" as const, refusal: part.refusal ?? "" }
            : { type: "text" as const, text: part.text ?? "" },
        )
      : null,
    ...(tool_calls ? { tool_calls } : {}),
    ...(tool_call_id !== undefined ? { tool_call_id } : {}),
    ...(typeof reasoning_content === "string" ? { reasoning_content } : {}),
  };
}

/** Deletes up to `limit` completions stored before `before`; returns how many. */
export async function sweepChatCompletions(db: Db, before: Date, limit: number): Promise<number> {
  const expired = db
    .select({ id: storedChatCompletions.id })
    .from(storedChatCompletions)
    .where(lt(storedChatCompletions.createdAt, before))
    .limit(limit);
  const deleted = await db
    .delete(storedChatCompletions)
    .where(inArray(storedChatCompletions.id, expired))
    .returning({ id: storedChatCompletions.id });
  return deleted.length;
}
