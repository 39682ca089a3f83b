// A JSON schema a request gives (a response format, a function's parameters, vLLM's guided_json) as the
// worker will generate under it, checked here so one the worker would refuse is a 400 before anything runs.
import { compileJsonSchema, JsonSchemaError, schemaAsRead } from "../worker/engine/json-schema.ts";
import { timedCompile } from "./compile-clock.ts";
import { invalidRequest, isTooDeep, TOO_DEEP } from "./errors.ts";

/**
 * The schema as read (schemaAsRead: lenient unless `strict`), once it compiles; else a 400 "Invalid schema
 * for `what`: …" naming `param`.
 */
export function checkedSchema(
  schema: Record<string, unknown>,
  strict: boolean | null | undefined,
  what: string,
  param: string,
): Record<string, unknown> {
  try {
    return timedCompile(() => {
      const read = schemaAsRead(schema, strict);
      compileJsonSchema(read);
      return read;
    });
  } catch (error) {
    if (error instanceof JsonSchemaError) {
      throw invalidRequest(`Invalid schema for ${what}: ${error.message}`, param);
    }
    if (isTooDeep(error)) throw invalidRequest(`Invalid schema for ${what}: it is ${TOO_DEEP}`, param);
    throw error;
  }
}
