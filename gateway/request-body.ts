// Reads a JSON request body against its schema: malformed JSON and schema failures become 400s that name
// the field, as OpenAI answers them. Unknown fields are dropped by the schemas, not refused.
import type { Context } from "hono";
import type { z } from "zod";
import { invalidBody, invalidRequest } from "./errors.ts";

export async function readBody<T>(c: Context, schema: z.ZodType<T>): Promise<T> {
  let json: unknown;
  try {
    json = JSON.parse(await c.req.text());
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
