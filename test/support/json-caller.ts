// Calls an app in process as one API key, with JSON in and out: what the storage-limit tests send to apps
// built with other limits (GatewayHarness.appWith).
import type { createApp } from "../../gateway/app.ts";
import type { ErrorBody } from "../../schema/api.ts";

export interface JsonAnswer {
  status: number;
  body: ErrorBody & { id: string };
}

/** POST (or, with `method`, another verb; a body only for POST) `path` as `key`. */
export function jsonCaller(app: ReturnType<typeof createApp>, key: string) {
  return async (path: string, body?: unknown, method = "POST"): Promise<JsonAnswer> => {
    const response = await app.request(path, {
      method,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      ...(method === "POST" ? { body: JSON.stringify(body) } : {}),
    });
    return { status: response.status, body: (await response.json()) as JsonAnswer["body"] };
  };
}
