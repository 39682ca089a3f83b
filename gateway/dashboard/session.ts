// The dashboard's sign-in session: after a person signs in with an API key, an HMAC-signed, HttpOnly,
// SameSite=Strict cookie holds the key's id and an expiry — never the key itself. Every page checks the
// signature and the expiry, then reads the key again, so revoking the key ends its sessions at once.
// Web Crypto only (hono/cookie), so it runs on Node and Workers alike; the secret must be shared by every
// gateway process that serves the dashboard (LUMINET_SESSION_SECRET), or sessions end when one restarts.
import { and, eq, isNull } from "drizzle-orm";
import type { Context } from "hono";
import { deleteCookie, getSignedCookie, setSignedCookie } from "hono/cookie";
import type { Db } from "../../db/open.ts";
import { apiKeys } from "../../schema/db.ts";
import type { Principal } from "../auth.ts";

export const SESSION_COOKIE = "luminet_session";
export const SESSION_TTL_MS = 12 * 3_600_000;
const COOKIE_PATH = "/dashboard";

/** Starts a session for the key: sets the signed cookie on the response. */
export async function startSession(
  c: Context,
  secret: string,
  principal: Principal,
  now: number,
): Promise<void> {
  const expires = now + SESSION_TTL_MS;
  await setSignedCookie(c, SESSION_COOKIE, `${principal.keyId}:${expires}`, secret, {
    path: COOKIE_PATH,
    httpOnly: true,
    sameSite: "Strict",
    // Browsers refuse Secure cookies over plain http (a local gateway); behind TLS they are Secure, TLS
    // ended here or at a proxy that says so (X-Forwarded-Proto). A client that claims https over plain
    // http only loses its own cookie, so the header is safe to believe.
    secure:
      new URL(c.req.url).protocol === "https:" ||
      c.req.header("x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase() === "https",
    maxAge: Math.floor(SESSION_TTL_MS / 1000),
  });
}

export function endSession(c: Context): void {
  deleteCookie(c, SESSION_COOKIE, { path: COOKIE_PATH });
}

/** The signed-in caller, or null: no cookie, a forged or expired one, or a key revoked since. */
export async function sessionPrincipal(
  c: Context,
  db: Db,
  secret: string,
  now: number,
): Promise<Principal | null> {
  const value = await getSignedCookie(c, secret, SESSION_COOKIE);
  if (!value) return null;
  const match = /^([^:]+):(\d+)$/.exec(value);
  if (!match || Number(match[2]) <= now) return null;
  const [row] = await db
    .select({ id: apiKeys.id, orgId: apiKeys.orgId, prefix: apiKeys.prefix, scopes: apiKeys.scopes })
    .from(apiKeys)
    .where(and(eq(apiKeys.id, match[1]!), isNull(apiKeys.revokedAt)));
  return row ? { keyId: row.id, orgId: row.orgId, prefix: row.prefix, scopes: row.scopes } : null;
}
