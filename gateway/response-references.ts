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
import type { GatewayDeps } from "./deps.ts";
import { ApiError, invalidRequest } from "./errors.ts";
import { ID_PREFIX } from "./response-items.ts";
import { responseId } from "./response-output.ts";
import { ownItems } from "./response-store.ts";

/**
 * `msg_<request id>`, `rs_<request id>`, `fc_<request id>_<k>`, `ctco_<request id>_in<k>`, …, each item
 * type's prefix as ids are made (response-items.ts): the request id, if the form fits.
 */
const ITEM_ID = new RegExp(`^(?:${Object.values(ID_PREFIX).join("|")})_([A-Za-z0-9-]+)(?:_(?:in)?\\d+)?$`);

function itemNotFound(id: string, param: string): ApiError {
  return new ApiError(
    404,
    "invalid_request_error",
    `Item with id '${id}' not found.`,
    "item_not_found",
    param,
  );
}

/** How much the items one request's references name may total: four times what its body may be. */
export function maxReferencedBytes(deps: Pick<GatewayDeps, "limits">): number {
  return 4 * deps.limits.maxBodyBytes;
}

/**
 * The items (a request's `field`) with each reference replaced by the item it names. Each response's items
 * and each other id are read once however often they are named; and the items named, counted once per
 * reference, may come to at most `maxBytes` of JSON: a short request could otherwise name one large item
 * a thousand times and make the gateway build a prompt of gigabytes.
 */
export async function resolveReferences(
  db: Db,
  orgId: string,
  items: readonly RequestItem[],
  maxBytes: number,
  field = "input",
): Promise<InputItem[]> {
  const once = <T>(cache: Map<string, Promise<T>>, key: string, read: () => Promise<T>) => {
    let found = cache.get(key);
    if (!found) {
      found = read();
      cache.set(key, found);
    }
    return found;
  };
  const byResponse = new Map<string, Promise<InputItem[]>>();
  const byId = new Map<string, Promise<InputItem | undefined>>();
  const sizes = new Map<InputItem, number>();
  const resolved = await Promise.all(
    items.map(async (item, index) => {
      if (item.type !== "item_reference") return { item, referenced: false };
      const requestId = ITEM_ID.exec(item.id)?.[1];
      const named =
        (requestId
          ? (await once(byResponse, requestId, () => ownItems(db, orgId, responseId(requestId)))).find(
              (it) => it.id === item.id,
            )
          : undefined) ?? (await once(byId, item.id, () => orgItem(db, orgId, item.id)));
      if (!named) throw itemNotFound(item.id, `${field}.${index}`);
      return { item: named, referenced: true };
    }),
  );
  let bytes = 0;
  for (const { item, referenced } of resolved) {
    if (!referenced) continue;
    let size = sizes.get(item);
    if (size === undefined) {
      size = JSON.stringify(item).length;
      sizes.set(item, size);
    }
    bytes += size;
    if (bytes > maxBytes) {
      throw invalidRequest(
        `The item references in '${field}' name ${Math.ceil(maxBytes / 2 ** 20)} MiB of items or more, the most one request may: reference fewer, or larger items less often.`,
        field,
      );
    }
  }
  return resolved.map(({ item }) => item);
}
