// Item references (`{"type": "item_reference", "id"}`) in a Responses request's input: items of the caller's
// stored responses or conversations, named by id, which clients such as the Vercel AI SDK send in place of
// earlier answers when responses are stored. The ids Luminet gives a response's items carry its request id
// (gateway/response-output.ts responseIds, gateway/response-items.ts withItemIds), so such a reference is
// one read of that response's own items; any other id (an item added through the Conversations API, or one
// whose id the caller chose) is looked up among the org's conversation items. An id that names no item of
// the caller's org is a 404.
import type { Db } from "../db/open.ts";
import type { InputItem, RequestItem } from "../schema/responses-api.ts";
import { orgItem } from "./conversation-store.ts";
import { ApiError } from "./errors.ts";
import { responseId } from "./response-output.ts";
import { ownItems } from "./response-store.ts";

/** `msg_<request id>`, `rs_<request id>`, `fc_<request id>_<k>`, `fco_<request id>_in<k>`, …: the request id, if the form fits. */
const ITEM_ID = /^(?:msg|fc|fco|rs)_([A-Za-z0-9-]+)(?:_(?:in)?\d+)?$/;

function itemNotFound(id: string, param: string): ApiError {
  return new ApiError(
    404,
    "invalid_request_error",
    `Item with id '${id}' not found.`,
    "item_not_found",
    param,
  );
}

/** The items (a request's `field`) with each reference replaced by the item it names. */
export async function resolveReferences(
  db: Db,
  orgId: string,
  items: readonly RequestItem[],
  field = "input",
): Promise<InputItem[]> {
  const itemsByResponse = new Map<string, Promise<InputItem[]>>();
  const itemsOf = (requestId: string) => {
    let found = itemsByResponse.get(requestId);
    if (!found) {
      found = ownItems(db, orgId, responseId(requestId));
      itemsByResponse.set(requestId, found);
    }
    return found;
  };
  return Promise.all(
    items.map(async (item, index) => {
      if (item.type !== "item_reference") return item;
      const requestId = ITEM_ID.exec(item.id)?.[1];
      const named =
        (requestId ? (await itemsOf(requestId)).find((it) => it.id === item.id) : undefined) ??
        (await orgItem(db, orgId, item.id));
      if (!named) throw itemNotFound(item.id, `${field}.${index}`);
      return named;
    }),
  );
}
