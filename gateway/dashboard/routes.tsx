// /dashboard: server-rendered pages (Hono JSX, inline SVG charts, no script) for a person signed in with
// an API key: usage and cost, the fleet, the org's adapters with admin actions, its batches and its logs.
//   GET  /dashboard/login, POST /dashboard/login (form: api_key), POST /dashboard/logout
//   GET  /dashboard[?days=7|30|90]   usage         GET /dashboard/fleet    workers
//   GET  /dashboard/adapters         adapters      POST /dashboard/adapters/:name/{pin,weight,delete}
//   GET  /dashboard/batches          batches       POST /dashboard/batches/:id/cancel
//   GET  /dashboard/logs[?kind=chat|responses&after=ID]   stored chat completions and responses
//   GET  /dashboard/logs/{chat,responses}/:id             one of them whole
//   GET  /dashboard/webhooks         webhooks      POST /dashboard/webhooks, /dashboard/webhooks/:id/delete
// Adapters and webhooks are managed with admin keys; to another key their pages say so. Pages answer HTML,
// errors included. Forms are protected by the SameSite=Strict session cookie and by a same-origin check on
// every POST; an action's outcome travels to the next page in a signed flash cookie.
import type { Context } from "hono";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { deleteCookie, getCookie, getSignedCookie, setSignedCookie } from "hono/cookie";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { parseTrafficWeight } from "../../core/traffic-weight.ts";
import { quotaStatus } from "../../meter/token-quota.ts";
import { usageReport } from "../../meter/usage-report.ts";
import { ADAPTER_NAME } from "../../schema/adapter-api.ts";
import { WebhookCreate } from "../../schema/webhook-api.ts";
import { deleteAdapter, listAdapters, setPinned, setTrafficWeight } from "../adapter-admin.ts";
import { ADMIN_SCOPE, keyLabel, listApiKeys, looksLikeApiKey } from "../api-keys.ts";
import { authenticate, type Principal } from "../auth.ts";
import { cancelBatch, listBatches } from "../batches.ts";
import { dropChatCompletion } from "../chat-completion-store.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { ApiError, invalidBody, toApiError } from "../errors.ts";
import { loadFile } from "../files.ts";
import { orgStorage } from "../org-storage.ts";
import { deleteResponse } from "../response-deletion.ts";
import { createWebhook, deleteWebhook, listWebhooks, recentDeliveries } from "../webhooks.ts";
import { AdaptersPage } from "./adapters-page.tsx";
import { AdminScopePage } from "./admin-scope-page.tsx";
import { BatchesPage } from "./batches-page.tsx";
import { FleetPage } from "./fleet-page.tsx";
import { Document, Layout } from "./layout.tsx";
import { type LogKind, logDetail, logPage } from "./log-entries.ts";
import { LoginPage } from "./login-page.tsx";
import { LogDetailPage, LogsPage } from "./logs-page.tsx";
import { endSession, SESSION_COOKIE, sessionPrincipal, startSession } from "./session.ts";
import { periodDays, USAGE_PERIODS, UsagePage, type UsagePeriod } from "./usage-page.tsx";
import { WebhooksPage } from "./webhooks-page.tsx";

const FLASH_COOKIE = "luminet_flash";
const LOGIN = "/dashboard/login";

/** Why a dashboard request was refused, shown on an HTML page. */
class DashboardError extends Error {
  override readonly name = "DashboardError";
  constructor(
    readonly status: 400 | 403 | 404,
    message: string,
  ) {
    super(message);
  }
}

/** True when a browser sent the POST from a dashboard page, not from another site. */
function sameOrigin(c: Context): boolean {
  const site = c.req.header("sec-fetch-site");
  if (site !== undefined) return site === "same-origin";
  const origin = c.req.header("origin");
  if (origin === undefined) return false;
  try {
    const host = new URL(origin).host;
    return host === new URL(c.req.url).host || host === c.req.header("host");
  } catch {
    return false;
  }
}

async function formField(c: Context, name: string): Promise<string | undefined> {
  const form = await c.req.parseBody().catch(() => {
    throw new DashboardError(400, "The form could not be read.");
  });
  const value = form[name];
  return typeof value === "string" ? value : undefined;
}

function adapterName(c: Context): string {
  const name = c.req.param("name") ?? "";
  if (!ADAPTER_NAME.test(name)) throw new DashboardError(400, `"${name}" is not an adapter name.`);
  return name;
}

const NOT_A_KEY =
  "That is not a Luminet API key: keys are lk_ followed by letters and digits (luminet keys create prints one).";
const SESSION_ENDED = "Your session ended: its API key was revoked, or the session ran out. Sign in again.";

export function dashboardRoutes(deps: GatewayDeps): Hono<GatewayEnv> {
  const routes = new Hono<GatewayEnv>();
  const secret = deps.sessionSecret;

  async function flash(c: Context, kind: "notice" | "error", message: string): Promise<void> {
    await setSignedCookie(c, FLASH_COOKIE, `${kind}:${message}`, secret, {
      path: "/dashboard",
      httpOnly: true,
      sameSite: "Strict",
      maxAge: 60,
    });
  }

  async function takeFlash(c: Context): Promise<{ notice?: string; error?: string }> {
    const value = await getSignedCookie(c, secret, FLASH_COOKIE);
    if (!value) return {};
    deleteCookie(c, FLASH_COOKIE, { path: "/dashboard" });
    const colon = value.indexOf(":");
    const kind = value.slice(0, colon);
    const message = value.slice(colon + 1);
    return kind === "error" ? { error: message } : { notice: message };
  }

  routes.use("*", async (c, next) => {
    c.header("cache-control", "no-store");
    c.header(
      "content-security-policy",
      "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    c.header("x-content-type-options", "nosniff");
    c.header("referrer-policy", "same-origin");
    if (c.req.method === "POST" && !sameOrigin(c)) {
      throw new DashboardError(403, "This form must be sent from the dashboard itself.");
    }
    await next();
  });
  routes.use("*", bodyLimit({ maxSize: 16 * 1024 }));

  routes.get("/login", (c) =>
    c.html(<LoginPage {...(c.req.query("session") === "ended" ? { notice: SESSION_ENDED } : {})} />),
  );

  routes.post("/login", async (c) => {
    const key = (await formField(c, "api_key"))?.trim() ?? "";
    // Said in the form's terms: the API's message talks of an Authorization header the person never sent.
    if (!looksLikeApiKey(key)) return c.html(<LoginPage error={NOT_A_KEY} />, 401);
    let principal: Principal;
    try {
      principal = await authenticate(deps.db, deps.authCache, `Bearer ${key}`);
    } catch (error) {
      const apiError = toApiError(error);
      if (apiError.status !== 401) throw error;
      return c.html(<LoginPage error={apiError.message} />, 401);
    }
    await startSession(c, secret, principal, deps.now());
    deps.log.info({ org: principal.orgId, key: principal.prefix }, "dashboard sign-in");
    return c.redirect("/dashboard", 303);
  });

  routes.post("/logout", (c) => {
    endSession(c);
    return c.redirect(LOGIN, 303);
  });

  routes.use("*", async (c, next) => {
    const principal = await sessionPrincipal(c, deps.db, secret, deps.now());
    if (!principal) {
      // A session that was there and is no longer valid (its key revoked, its time over) is said so.
      const ended = getCookie(c, SESSION_COOKIE) !== undefined;
      endSession(c);
      return c.redirect(ended ? `${LOGIN}?session=ended` : LOGIN, 303);
    }
    c.set("principal", principal);
    await next();
  });

  routes.get("/", async (c) => {
    const principal = c.get("principal");
    const asked = Number(c.req.query("days") ?? 30);
    const period: UsagePeriod = USAGE_PERIODS.find((p) => p === asked) ?? 30;
    const now = deps.now();
    const { days, start, end } = periodDays(period, now);
    const window = { org: principal.orgId, since: start, until: end };
    // Key names are for admins, as GET /v1/keys is; other keys see key ids.
    const admin = principal.scopes.includes(ADMIN_SCOPE);
    const [byDay, byAdapter, byKey, byTier, quota, keys, limits, stored] = await Promise.all([
      usageReport(deps.db, { by: "day", ...window }),
      usageReport(deps.db, { by: "adapter", ...window }),
      usageReport(deps.db, { by: "key", ...window }),
      usageReport(deps.db, { by: "tier", ...window }),
      quotaStatus(deps.db, principal.orgId, now),
      admin ? listApiKeys(deps.db, principal.orgId) : [],
      deps.callerLimits.get(deps.db, principal.keyId),
      orgStorage(deps, principal.orgId),
    ]);
    const keyNames = new Map(keys.map((key) => [key.id, keyLabel(key)]));
    const { priorityTier } = limits;
    const storage = (["files", "adapters", "conversations", "responses"] as const).map((kind) => ({
      kind,
      ...stored[kind],
    }));
    return c.html(
      <Layout title="Usage" section="usage" principal={principal} {...(await takeFlash(c))}>
        <UsagePage
          data={{ period, days, byDay, byAdapter, byKey, byTier, keyNames, quota, priorityTier, storage }}
        />
      </Layout>,
    );
  });

  routes.get("/fleet", async (c) => {
    const principal = c.get("principal");
    const heartbeats = await deps.bus.liveHeartbeats();
    return c.html(
      <Layout title="Fleet" section="fleet" principal={principal} {...(await takeFlash(c))}>
        <FleetPage heartbeats={heartbeats} org={principal.orgId} now={deps.now()} />
      </Layout>,
    );
  });

  routes.get("/adapters", async (c) => {
    const principal = c.get("principal");
    const admin = principal.scopes.includes(ADMIN_SCOPE);
    const flashed = await takeFlash(c);
    if (!admin) {
      return c.html(
        <AdminScopePage
          title="Adapters"
          section="adapters"
          principal={principal}
          {...flashed}
          what="adapters"
          actions="list, pin and delete your org's adapters"
        />,
      );
    }
    return c.html(
      <Layout title="Adapters" section="adapters" principal={principal} {...flashed}>
        <AdaptersPage adapters={await listAdapters(deps, principal.orgId)} admin={admin} />
      </Layout>,
    );
  });

  routes.get("/batches", async (c) => {
    const principal = c.get("principal");
    const page = await listBatches(deps.db, principal.orgId, { limit: 50, after: null });
    return c.html(
      <Layout title="Batches" section="batches" principal={principal} {...(await takeFlash(c))}>
        <BatchesPage batches={page.data} now={deps.now()} />
      </Layout>,
    );
  });

  routes.post("/batches/:id/cancel", async (c) => {
    const id = c.req.param("id");
    try {
      const batch = await cancelBatch(deps.db, c.get("principal").orgId, id, new Date(deps.now()));
      await flash(c, "notice", `Cancelling ${batch.id}: requests not yet started will not run.`);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status >= 500) throw error;
      await flash(c, "error", error.message);
    }
    return c.redirect("/dashboard/batches", 303);
  });

  routes.get("/logs", async (c) => {
    const principal = c.get("principal");
    const kind: LogKind = c.req.query("kind") === "responses" ? "responses" : "chat";
    const page = await logPage(deps.db, principal.orgId, kind, {
      limit: 50,
      after: c.req.query("after") ?? null,
    });
    return c.html(
      <Layout title="Logs" section="logs" principal={principal} {...(await takeFlash(c))}>
        <LogsPage kind={kind} page={page} now={deps.now()} />
      </Layout>,
    );
  });

  routes.get("/logs/:kind{chat|responses}/:id", async (c) => {
    const principal = c.get("principal");
    const kind = c.req.param("kind") as LogKind;
    const id = c.req.param("id");
    const detail = await logDetail(deps.db, principal.orgId, kind, id);
    if (!detail)
      throw new DashboardError(
        404,
        `No stored ${kind === "chat" ? "chat completion" : "response"} ${id} in this org.`,
      );
    return c.html(
      <Layout title={id} section="logs" principal={principal}>
        <LogDetailPage kind={kind} detail={detail} now={deps.now()} />
      </Layout>,
    );
  });

  // Deletes a stored entry, as DELETE /v1/chat/completions/{id} and DELETE /v1/responses/{id} do (any key
  // of the org): what an org holding its response storage limit does to store again.
  routes.post("/logs/:kind{chat|responses}/:id/delete", async (c) => {
    const { orgId } = c.get("principal");
    const kind = c.req.param("kind") as LogKind;
    const id = c.req.param("id");
    const deleted =
      kind === "chat"
        ? await dropChatCompletion(deps.db, orgId, id)
        : await deleteResponse(deps.db, orgId, id, new Date(deps.now()));
    await flash(
      c,
      deleted ? "notice" : "error",
      deleted
        ? `Deleted ${id}.`
        : `No stored ${kind === "chat" ? "chat completion" : "response"} ${id} in this org.`,
    );
    return c.redirect(`/dashboard/logs?kind=${kind}`, 303);
  });

  /** The webhooks page's data: admin keys only, as the webhook API. */
  async function webhooksPage(c: Context<GatewayEnv>, flashed: { notice?: string; error?: string }) {
    const principal = c.get("principal");
    return c.html(
      <Layout title="Webhooks" section="webhooks" principal={principal} {...flashed}>
        <WebhooksPage
          endpoints={await listWebhooks(deps.db, principal.orgId)}
          deliveries={await recentDeliveries(deps.db, principal.orgId, 50)}
          now={deps.now()}
        />
      </Layout>,
    );
  }

  function requireAdmin(c: Context<GatewayEnv>, what: string): void {
    if (!c.get("principal").scopes.includes(ADMIN_SCOPE)) {
      throw new DashboardError(403, `${what} needs an API key with the "${ADMIN_SCOPE}" scope.`);
    }
  }

  routes.get("/webhooks", async (c) => {
    const principal = c.get("principal");
    const flashed = await takeFlash(c);
    if (!principal.scopes.includes(ADMIN_SCOPE)) {
      return c.html(
        <AdminScopePage
          title="Webhooks"
          section="webhooks"
          principal={principal}
          {...flashed}
          what="webhooks"
          actions="add and delete your org's endpoints and see what was sent to them"
        />,
      );
    }
    return webhooksPage(c, flashed);
  });

  // Answers the page itself (no redirect), so the new endpoint's secret is shown once and kept nowhere.
  routes.post("/webhooks", async (c) => {
    requireAdmin(c, "Managing webhooks");
    const form = await c.req.parseBody({ all: true });
    const ticked = form.events === undefined ? [] : [form.events].flat();
    const parsed = WebhookCreate.safeParse({
      url: typeof form.url === "string" ? form.url.trim() : "",
      ...(ticked.length > 0 ? { events: ticked } : {}),
    });
    try {
      if (!parsed.success) throw invalidBody(parsed.error);
      const created = await createWebhook(deps, c.get("principal").orgId, parsed.data);
      return webhooksPage(c, {
        notice: `Added ${created.id}. Its signing secret, shown only now: ${created.secret}`,
      });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status >= 500) throw error;
      return webhooksPage(c, { error: error.message });
    }
  });

  routes.post("/webhooks/:id/delete", async (c) => {
    requireAdmin(c, "Managing webhooks");
    const id = c.req.param("id");
    const deleted = await deleteWebhook(deps.db, c.get("principal").orgId, id);
    await flash(
      c,
      deleted ? "notice" : "error",
      deleted ? `Deleted ${id}.` : `No webhook endpoint ${id} in this org.`,
    );
    return c.redirect("/dashboard/webhooks", 303);
  });

  // A batch's input, output or error file, as a download: the org's own files only.
  routes.get("/files/:id/content", async (c) => {
    const id = c.req.param("id");
    const file = await loadFile(deps.db, c.get("principal").orgId, id, new Date(deps.now()));
    if (!file) throw new DashboardError(404, `No file ${id} in this org.`);
    return c.body(file.content, 200, {
      "content-type": "application/jsonl",
      "content-disposition": `attachment; filename="${file.filename.replace(/[^\w.-]/g, "_")}"`,
    });
  });

  /** Runs an admin action and goes back to the adapters page with its outcome. */
  function adminAction(run: (c: Context<GatewayEnv>, org: string, name: string) => Promise<string>) {
    return async (c: Context<GatewayEnv>) => {
      const principal = c.get("principal");
      requireAdmin(c, "Managing adapters");
      const name = adapterName(c);
      try {
        await flash(c, "notice", await run(c, principal.orgId, name));
      } catch (error) {
        if (!(error instanceof ApiError) || error.status >= 500) throw error;
        await flash(c, "error", error.message);
      }
      return c.redirect("/dashboard/adapters", 303);
    };
  }

  routes.post(
    "/adapters/:name/pin",
    adminAction(async (c, org, name) => {
      const pinned = (await formField(c, "pinned")) === "true";
      await setPinned(deps, org, name, pinned);
      return pinned
        ? `Pinned ${org}/${name}: every worker of its base keeps it in a slot.`
        : `Unpinned ${org}/${name}.`;
    }),
  );

  routes.post(
    "/adapters/:name/weight",
    adminAction(async (c, org, name) => {
      const raw = (await formField(c, "weight")) ?? "";
      const weight = parseTrafficWeight(raw);
      if (weight === undefined) {
        throw new ApiError(
          400,
          "invalid_request_error",
          `A traffic weight is a whole number from 0 to 100, got "${raw}".`,
        );
      }
      const updated = await setTrafficWeight(deps, org, name, weight);
      return `${org}/${name} now carries weight ${updated.traffic_weight} of alias ${org}/${updated.alias}.`;
    }),
  );

  routes.post(
    "/adapters/:name/delete",
    adminAction(async (c, org, name) => {
      if ((await formField(c, "confirm")) !== "yes") {
        throw new ApiError(400, "invalid_request_error", `Tick "sure" to delete ${org}/${name}.`);
      }
      try {
        await deleteAdapter(deps, org, name, (await formField(c, "force")) === "yes");
      } catch (error) {
        if (!(error instanceof ApiError) || error.code !== "adapter_in_use") throw error;
        // The API's message names CLI commands; here the row's own controls do it. Its first clause
        // says why (pinned, or carrying its alias's traffic).
        const why = error.message.split(";")[0];
        throw new ApiError(
          409,
          "invalid_request_error",
          `${why}: unpin it or set its weight to 0 with the controls on its row first, or tick "force" to delete it anyway.`,
          "adapter_in_use",
        );
      }
      return `Deleted ${org}/${name}; workers evict it within a second.`;
    }),
  );

  // Last: what no page above answered gets the dashboard's own 404 page, not the API's JSON one.
  routes.all("*", (c) => {
    throw new DashboardError(404, `There is no dashboard page at ${c.req.path}.`);
  });

  routes.onError((error, c) => {
    const status = error instanceof DashboardError ? error.status : toApiError(error).status;
    const message = error instanceof DashboardError ? error.message : toApiError(error).message;
    if (status >= 500) {
      deps.log.error({ err: error instanceof Error ? error.message : String(error) }, "dashboard failed");
    }
    return c.html(
      <Document title="Error">
        <main class="login">
          <section>
            <h1>{status >= 500 ? "Something went wrong" : "That did not work"}</h1>
            <div class="error" role="alert">
              {message}
            </div>
            <p>
              <a href="/dashboard">Back to the dashboard</a>
            </p>
          </section>
        </main>
      </Document>,
      status as ContentfulStatusCode,
    );
  });

  return routes;
}
