// Whether a query failed because a string in it holds what Postgres text cannot: U+0000 in a parameter
// (SQLSTATE 22021, "invalid byte sequence for encoding UTF8: 0x00") or in a jsonb value (22P05). Such a
// string came from the request (a path's %00, an id in a body), so the gateway answers 400, not 500; the
// statement failed whole, so nothing was written. Stored model text never gets here: the jsonb columns
// that hold it encode U+0000 (schema/text-safe-jsonb.ts).

const UNSTORABLE_SQLSTATE = new Set(["22021", "22P05"]);

export function isUnstorableText(error: unknown): boolean {
  for (let cause = error; cause instanceof Error; cause = cause.cause) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string" && UNSTORABLE_SQLSTATE.has(code)) return true;
  }
  return false;
}
