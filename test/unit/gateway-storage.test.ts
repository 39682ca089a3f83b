// GET /v1/storage: any key of an org reads what the org keeps (files not yet expired, live adapters,
// conversations, stored responses and chat completions) against its limits, the org's own where the
// operator set one, else the gateway's; each org sees only its own, and naming another org is refused.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_MAX_ORG_ADAPTER_BYTES } from "../../gateway/adapter-storage-quota.ts";
import { jsonBytes } from "../../gateway/conversation-storage-quota.ts";
import { setStorageLimits } from "../../gateway/orgs.ts";
import { saveResponse } from "../../gateway/response-store.ts";
import { ErrorBody } from "../../schema/api.ts";
import { storedResponses } from "../../schema/db.ts";
import type { ResponseObject } from "../../schema/responses-api.ts";
import { StorageObject } from "../../schema/storage-api.ts";
import { createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { storedResponseBytes } from "../support/stored-bytes.ts";

let h: GatewayHarness;

beforeAll(async () => {
  h = await createGatewayHarness();
});
afterAll(() => h?.close());

async function storageOf(key: string, query = ""): Promise<Response> {
  return h.app.request(`/v1/storage${query}`, { headers: { authorization: `Bearer ${key}` } });
}

async function post(
  key: string,
  path: string,
  body: RequestInit["body"],
  contentType?: string,
): Promise<void> {
  const response = await h.app.request(path, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, ...(contentType ? { "content-type": contentType } : {}) },
    body,
  });
  expect(response.status, await response.clone().text()).toBe(200);
}

describe("GET /v1/storage", () => {
  it("answers what the org keeps against its limits, its own where set, and only its own", async () => {
    const empty = StorageObject.parse(await (await storageOf(h.keys.acme)).json());
    expect(empty).toEqual({
      object: "storage",
      org: "acme",
      files: { bytes: 0, limit: h.deps.limits.maxOrgFileBytes },
      adapters: { bytes: 0, limit: DEFAULT_MAX_ORG_ADAPTER_BYTES },
      conversations: { bytes: 0, limit: h.deps.limits.maxOrgConversationBytes },
      responses: { bytes: 0, limit: h.deps.limits.maxOrgResponseBytes },
    });

    const line = `${JSON.stringify({ custom_id: "a", method: "POST", url: "/v1/chat/completions", body: {} })}\n`;
    const upload = new FormData();
    upload.set("purpose", "batch");
    upload.set("file", new Blob([line]), "in.jsonl");
    await post(h.keys.acme, "/v1/files", upload);
    const metadata = { customer: "Grüße" };
    await post(h.keys.acme, "/v1/conversations", JSON.stringify({ metadata }), "application/json");
    await h.addAdapter({ name: "stored", bytes: 5000 });
    await h.addAdapter({ name: "deleted", bytes: 7000, deletedAt: new Date() });
    const response = { id: "resp_kept", object: "response", created_at: 1_700_000_000, status: "completed" };
    await saveResponse(h.db, "acme", {
      response: response as unknown as ResponseObject,
      items: [{ type: "message", role: "user", content: "Grüße" }],
      previous: null,
    });
    const [row] = await h.db.select({ bytes: storedResponseBytes }).from(storedResponses);
    await setStorageLimits(h.db, "acme", { adapters: 1_000_000, responses: 2_000_000 });

    expect(StorageObject.parse(await (await storageOf(h.keys.acme)).json())).toEqual({
      object: "storage",
      org: "acme",
      files: { bytes: new TextEncoder().encode(line).length, limit: h.deps.limits.maxOrgFileBytes },
      adapters: { bytes: 5000, limit: 1_000_000 },
      conversations: { bytes: jsonBytes(metadata), limit: h.deps.limits.maxOrgConversationBytes },
      responses: { bytes: row!.bytes, limit: 2_000_000 },
    });
    const other = StorageObject.parse(await (await storageOf(h.keys.other)).json());
    expect([
      other.org,
      other.files.bytes,
      other.adapters.bytes,
      other.conversations.bytes,
      other.responses.bytes,
    ]).toEqual(["other", 0, 0, 0, 0]);
    const refused = await storageOf(h.keys.other, "?org=acme");
    expect(refused.status).toBe(403);
    expect(ErrorBody.parse(await refused.json()).error.type).toBe("permission_error");
  });
});
