// Reads a JSON request body against its schema: malformed JSON and schema failures become 400s that name
// the field, as OpenAI answers them. Unknown fields are dropped by the schemas, not refused.
import type { Context } from "hono";
import type { z } from "zod";
import { invalidBody, invalidRequest } from "./errors.ts";

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The body as text, refused when it is not UTF-8 (JSON must be): a lenient read would turn the bad bytes
 * into U+FFFD and run a prompt the client did not send. Read as bytes, which Hono keeps, so every reader of
 * the body (the idempotency middleware, then the route) sees the same bytes.
 */
export async function readBodyText(c: Context): Promise<string> {
  const bytes = await c.req.arrayBuffer();
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw invalidRequest("The request body is not valid UTF-8: JSON must be sent as UTF-8 text.");
  }
}

export async function readBody<T>(c: Context, schema: z.ZodType<T>): Promise<T> {
  const text = await readBodyText(c);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw invalidRequest(
      "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.",
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw invalidRequest("The request body must be a JSON object.");
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw invalidBody(parsed.error);
  return parsed.data;
}
