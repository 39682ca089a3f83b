// A jsonb column that keeps any string. Postgres refuses two things a JavaScript string may hold: U+0000
// ("unsupported Unicode escape sequence") and a lone surrogate, half of a UTF-16 pair that a client may send
// as "\ud800" ("invalid input syntax for type json"). Model output may hold the first, request text either,
// and a stored response must read back as it was sent. So, in what Postgres sees, U+0000 is written as
// U+FFFF "0", a lone surrogate as U+FFFF "s" and its four hex digits, and U+FFFF itself as U+FFFF U+FFFF (a
// noncharacter, reserved by Unicode for internal use; doubling it keeps the encoding reversible); all are
// undone on read. Strings without any of them, nearly all, are stored as they are, so SQL over these
// columns (->> 'status', @> on metadata) works as on plain jsonb.
import { customType } from "drizzle-orm/pg-core";

const ESCAPE = "\uffff";

/**
 * In the text JSON.stringify writes: an escaped backslash (matched first, so `\\u0000`, a backslash and
 * then "u0000", is left alone), U+0000 (the escape `\u0000`), a lone surrogate (`\udXXX`; a whole pair is
 * written as it is) and U+FFFF (as it is).
 */
const ENCODED = /\\\\|\\u0000|\\ud[89a-f][0-9a-f]{2}|\uffff/g;
const UNSTORABLE = /\\u0000|\\ud[89a-f][0-9a-f]{2}|\uffff/;

/** The JSON text to hand Postgres for `value`, also for raw SQL (`${storableJson(x)}::jsonb`). */
export function storableJson(value: unknown): string {
  const text = JSON.stringify(value);
  if (!UNSTORABLE.test(text)) return text;
  return text.replace(ENCODED, (match) => {
    if (match === "\\\\") return match;
    if (match === ESCAPE) return ESCAPE + ESCAPE;
    if (match === "\\u0000") return `${ESCAPE}0`;
    return `${ESCAPE}s${match.slice(2)}`;
  });
}

function restoredString(text: string): string {
  if (!text.includes(ESCAPE)) return text;
  return text.replace(/\uffff(0|\uffff|s[0-9a-f]{4})/g, (_, code: string) => {
    if (code === "0") return "\u0000";
    if (code === ESCAPE) return ESCAPE;
    return String.fromCharCode(Number.parseInt(code.slice(1), 16));
  });
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
