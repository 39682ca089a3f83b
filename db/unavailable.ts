// Whether an error means the database could not be reached (stopped, restarting, a broken connection)
// rather than that a query failed: the gateway answers the first with 503 and "retry", the second with 500.
// The drivers wrap the cause (drizzle's "Failed query: ..."), so the whole cause chain is searched.

/** Socket errors and postgres.js's own connection codes. */
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENOTFOUND",
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECTION_ENDED",
  "CONNECT_TIMEOUT",
]);

/**
 * SQLSTATE class 08 (connection exception); 57P01-57P03: shutting down, crashed, starting up; 53300: out of
 * connection slots ("too many clients"); 55000 as a connection meets it: the database is not accepting
 * connections (a maintenance window's ALLOW_CONNECTIONS false).
 */
const UNAVAILABLE_SQLSTATE = /^(08...|57P0[123]|53300|55000)$/;

export function isDatabaseUnavailable(error: unknown): boolean {
  for (let cause = error; cause instanceof Error; cause = cause.cause) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string" && (CONNECTION_CODES.has(code) || UNAVAILABLE_SQLSTATE.test(code))) {
      return true;
    }
  }
  return false;
}
