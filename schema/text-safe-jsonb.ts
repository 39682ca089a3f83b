// A jsonb column that keeps any string. Postgres refuses U+0000 in a jsonb string ("unsupported Unicode
// escape sequence"), yet model output and request text may hold one, and a stored response must read back
// as it was sent. So, in what Postgres sees, U+0000 is written as U+FFFF "0" and U+FFFF itself as U+FFFF
// U+FFFF (a noncharacter, reserved by Unicode for internal use; doubling it keeps the encoding reversible);
// both are undone on read. Strings without either character, nearly all, are stored as they are, so SQL over
// these columns (->> 'status', @> on metadata) works as on plain jsonb.
import { customType } from "drizzle-orm/pg-core";

const ESCAPE = "\uffff";

/**
 * The JSON text to hand Postgres for `value`, also for raw SQL (`${storableJson(x)}::jsonb`). In JSON text
 * U+0000 is the escape `\u0000`; an escaped backslash is matched first, so `\\u0000` (a backslash, then
 * "u0000") is left as it is.
 */
export function storableJson(value: unknown): string {
  const text = JSON.stringify(value);
  if (!text.includes("\\u0000") && !text.includes(ESCAPE)) return text;
  return text.replace(/\\\\|\\u0000|\uffff/g, (match) =>
    match === "\\\\" ? match : match === ESCAPE ? ESCAPE + ESCAPE : `${ESCAPE}0`,
  );
}

function restoredString(text: string): string {
  return text.includes(ESCAPE)
    ? text.replace(/\uffff([0\uffff])/g, (_, next: string) => (next === "0" ? "\u0000" : ESCAPE))
    : text;
}

/** A value read from a column storableJson wrote, as it was before (keys and strings at any depth). */
export function restoredJson(value: unknown): unknown {
  if (typeof value === "string") return restoredString(value);
  if (Array.isArray(value)) return value.map(restoredJson);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [restoredString(key), restoredJson(item)]),
    );
  }
  return value;
}

/** jsonb in the database (the migrations do not change); in TypeScript, any JSON value with any string. */
export const textSafeJsonb = customType<{ data: unknown; driverData: unknown }>({
  dataType: () => "jsonb",
  toDriver: storableJson,
  // Every driver in use hands jsonb over parsed; text is parsed here as drizzle's own jsonb does.
  fromDriver: (value) => restoredJson(typeof value === "string" ? parsedIfJson(value) : value),
});

function parsedIfJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
