// The items of a stored response's conversation as GET /v1/responses/{id}/input_items lists them: each with
// its own id (given by the client, the response's output item id, or one made when the response was stored)
// and in OpenAI's item shapes, text content as parts; a page at a time, newest first unless asked otherwise.

import type { ListPage } from "../schema/batch-api.ts";
import type { InputItem, ListedItem } from "../schema/responses-api.ts";
import { type ListOrder, pageOf } from "./list-page.ts";

export const ID_PREFIX: Record<InputItem["type"], string> = {
  message: "msg",
  function_call: "fc",
  function_call_output: "fco",
  custom_tool_call: "ctc",
  custom_tool_call_output: "ctco",
  reasoning: "rs",
};

/** The request's input items, each given an id unless it has one: `<prefix>_<request id>_in<k>`. */
export function withItemIds(items: readonly InputItem[], requestId: string): InputItem[] {
  return items.map((item, k) =>
    item.id ? item : { ...item, id: `${ID_PREFIX[item.type]}_${requestId}_in${k}` },
  );
}

/** An item as OpenAI lists one (a response's input items, a conversation's items): text content as parts. */
export function listedItem(item: InputItem): ListedItem {
  const id = item.id ?? "";
  const status = item.status === "incomplete" ? "incomplete" : "completed";
  if (item.type === "function_call") {
    const { call_id, name, arguments: args } = item;
    return { id, type: "function_call", call_id, name, arguments: args, status };
  }
  if (item.type === "custom_tool_call") {
    const { call_id, name, input } = item;
    return { id, type: "custom_tool_call", call_id, name, input, status };
  }
  if (item.type === "function_call_output" || item.type === "custom_tool_call_output") {
    const output =
      typeof item.output === "string" ? item.output : item.output.map((p) => p.text ?? "").join("");
    return { id, type: item.type, call_id: item.call_id, output, status };
  }
  if (item.type === "reasoning") {
    return {
      id,
      type: "reasoning",
      summary: item.summary ?? [],
      content: item.content ?? [],
      status,
    };
  }
  const parts =
    typeof item.content === "string"
      ? [{ type: item.role === "assistant" ? "output_text" : "input_text", text: item.content }]
      : item.content;
  return {
    id,
    type: "message",
    role: item.role,
    status,
    content: parts.map((part) =>
      part.type === "output_text"
        ? { type: "output_text", text: part.text ?? "", annotations: [] }
        : part.type === "refusal"
          ? { type: "refusal", refusal: part.refusal ?? "" }
          : { type: "input_text", text: part.text ?? "" },
    ),
  };
}

/** One page of the conversation's items: `limit` of them after the item `after`, in `order`. */
export function itemPage(
  conversation: readonly InputItem[],
  query: { limit: number; order: ListOrder; after?: string | undefined },
): ListPage<ListedItem> {
  return pageOf(conversation.map(listedItem), query, "input item");
}
