// What the dashboard's logs pages read: the org's stored chat completions and stored responses, newest
// first a page at a time, each summed up as one row (model, the last thing the user said, the answer's
// start, tokens), and one of them whole (every turn it answered, then the answer).
import { and, desc, eq } from "drizzle-orm";
import type { Db } from "../../db/open.ts";
import { type ChatCompletion, type ChatMessageIn, contentPartsText } from "../../schema/api.ts";
import { storedChatCompletions, storedResponses } from "../../schema/db.ts";
import type { InputItem, OutputItem, ResponseObject } from "../../schema/responses-api.ts";
import { afterRow, listPage } from "../list-page.ts";
import { loadResponse } from "../response-store.ts";

export type LogKind = "chat" | "responses";

export interface LogEntry {
  id: string;
  model: string;
  /** Seconds since the epoch. */
  created: number;
  status: string;
  /** The last user message's text (or the last item's, where no user spoke). */
  input: string;
  /** The answer's text, or its calls as `name(arguments)`. */
  output: string;
  inputTokens: number | null;
  outputTokens: number | null;
  metadata: Record<string, string>;
}

/** One turn of a logged exchange: who, and what (a call as `name(arguments)`). */
export interface LogTurn {
  role: string;
  text: string;
}

export interface LogDetail {
  entry: LogEntry;
  turns: LogTurn[];
  answer: LogTurn[];
}

export interface LogPage {
  entries: LogEntry[];
  /** The id to read the next (older) page after; null when this is the last. */
  next: string | null;
}

type Call = { name: string; args: string };
const callText = ({ name, args }: Call) => `${name}(${args})`;

function chatTurn(message: ChatMessageIn): LogTurn {
  const content =
    typeof message.content === "string" ? message.content : contentPartsText(message.content ?? []);
  const calls = (message.tool_calls ?? []).map((call) =>
    callText(
      call.type === "function"
        ? { name: call.function.name, args: call.function.arguments }
        : { name: call.custom.name, args: call.custom.input },
    ),
  );
  return { role: message.role, text: [content, ...calls].filter((t) => t !== "").join("\n") };
}

/** Each choice's reasoning, where it reasoned, then its answer. */
function chatAnswer(completion: ChatCompletion): LogTurn[] {
  return completion.choices.flatMap(({ message }) => [
    ...(message.reasoning_content ? [{ role: "reasoning", text: message.reasoning_content }] : []),
    chatTurn({ role: "assistant", content: message.content, tool_calls: message.tool_calls }),
  ]);
}

function itemTurn(item: InputItem | OutputItem): LogTurn {
  switch (item.type) {
    case "message": {
      const content =
        typeof item.content === "string"
          ? item.content
          : item.content.map((part) => ("text" in part ? (part.text ?? "") : "")).join("");
      return { role: item.role, text: content };
    }
    case "function_call":
      return { role: "assistant", text: callText({ name: item.name, args: item.arguments }) };
    case "custom_tool_call":
      return { role: "assistant", text: callText({ name: item.name, args: item.input }) };
    case "function_call_output":
    case "custom_tool_call_output":
      return {
        role: "tool",
        text: typeof item.output === "string" ? item.output : item.output.map((p) => p.text ?? "").join(""),
      };
    case "reasoning":
      return { role: "reasoning", text: (item.content ?? []).map((part) => part.text).join("\n\n") };
  }
}

/** The last thing the user said, else the last turn's text. */
function lastInput(turns: readonly LogTurn[]): string {
  return (turns.findLast((turn) => turn.role === "user") ?? turns.at(-1))?.text ?? "";
}

function answerText(answer: readonly LogTurn[]): string {
  return answer
    .filter((turn) => turn.role !== "reasoning")
    .map((turn) => turn.text)
    .join("\n");
}

function chatEntry(row: { completion: unknown; messages: unknown; metadata: unknown }): LogDetail {
  const completion = row.completion as ChatCompletion;
  const turns = (row.messages as ChatMessageIn[]).map(chatTurn);
  const answer = chatAnswer(completion);
  return {
    entry: {
      id: completion.id,
      model: completion.model,
      created: completion.created,
      status: completion.choices[0]?.finish_reason ?? "stop",
      input: lastInput(turns),
      output: answerText(answer),
      inputTokens: completion.usage.prompt_tokens,
      outputTokens: completion.usage.completion_tokens,
      metadata: row.metadata as Record<string, string>,
    },
    turns,
    answer,
  };
}

function responseEntry(response: ResponseObject, conversation: readonly InputItem[]): LogDetail {
  const turns = conversation.map(itemTurn);
  if (response.instructions) turns.unshift({ role: "instructions", text: response.instructions });
  const answer = response.output.map(itemTurn);
  return {
    entry: {
      id: response.id,
      model: response.model,
      created: response.created_at,
      status: response.status,
      input: lastInput(turns),
      output: answerText(answer),
      inputTokens: response.usage?.input_tokens ?? null,
      outputTokens: response.usage?.output_tokens ?? null,
      metadata: response.metadata,
    },
    turns,
    answer,
  };
}

/** What a stored chat completion's log entry is made of. */
const chatColumns = {
  completion: storedChatCompletions.completion,
  messages: storedChatCompletions.messages,
  metadata: storedChatCompletions.metadata,
};

/** A page of the org's stored chat completions or responses, newest first, after the entry `after`. */
export async function logPage(
  db: Pick<Db, "select">,
  orgId: string,
  kind: LogKind,
  options: { limit: number; after: string | null },
): Promise<LogPage> {
  const table = kind === "chat" ? storedChatCompletions : storedResponses;
  const conditions = [eq(table.orgId, orgId)];
  // A cursor that names nothing (deleted meanwhile) starts from the newest.
  const later = options.after ? await afterRow(db, table, eq(table.orgId, orgId), options.after) : null;
  if (later) conditions.push(later);
  const where = and(...conditions);
  const order = [desc(table.createdAt), desc(table.id)] as const;
  const details =
    kind === "chat"
      ? (
          await db
            .select(chatColumns)
            .from(storedChatCompletions)
            .where(where)
            .orderBy(...order)
            .limit(options.limit + 1)
        ).map(chatEntry)
      : (
          await db
            .select({ response: storedResponses.response, conversation: storedResponses.conversation })
            .from(storedResponses)
            .where(where)
            .orderBy(...order)
            .limit(options.limit + 1)
        ).map((row) => responseEntry(row.response as ResponseObject, row.conversation as InputItem[]));
  const page = listPage(
    details.map((detail) => detail.entry),
    options.limit,
  );
  return { entries: page.data, next: page.has_more ? page.last_id : null };
}

/** One stored chat completion or response of the org, whole; null when there is none. */
export async function logDetail(db: Db, orgId: string, kind: LogKind, id: string): Promise<LogDetail | null> {
  if (kind === "responses") {
    const kept = await loadResponse(db, orgId, id);
    return kept ? responseEntry(kept.response, kept.conversation) : null;
  }
  const [row] = await db
    .select(chatColumns)
    .from(storedChatCompletions)
    .where(and(eq(storedChatCompletions.orgId, orgId), eq(storedChatCompletions.id, id)));
  return row ? chatEntry(row) : null;
}
