// The dashboard over app.request (no browser): sign-in with an API key to a signed HttpOnly cookie that
// never holds the key, sessions that end with the key, forms refused from other origins, usage numbers and
// chart bars that match GET /v1/usage, the fleet without other orgs' adapter names, admin actions that
// change what the adapter API reports, the org's batches with their files and a cancel, and its logs of
// stored chat completions and responses.
import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApiKey, ensureOrg, listApiKeys, revokeApiKey } from "../../gateway/api-keys.ts";
import { BatchRunner } from "../../gateway/batch-runner.ts";
import { saveChatCompletion } from "../../gateway/chat-completion-store.ts";
import { setPriorityTier } from "../../gateway/orgs.ts";
import { WebhookSender } from "../../gateway/webhook-sender.ts";
import { listWebhooks, queueEvent } from "../../gateway/webhooks.ts";
import { setMonthlyTokenQuota } from "../../meter/token-quota.ts";
import type { UsageReport } from "../../meter/usage-report.ts";
import type { AdapterObject } from "../../schema/adapter-api.ts";
import { adapters, apiKeys } from "../../schema/db.ts";
import { createDashboardFixture, type DashboardFixture } from "../support/dashboard-fixture.ts";
import { BASE } from "../support/gateway-harness.ts";
import { orgTotals, usageEvent } from "../support/meter-fixtures.ts";

let f: DashboardFixture;
const ORIGIN = "http://localhost";

beforeAll(async () => {
  f = await createDashboardFixture();
});

afterAll(async () => {
  await f.close();
});

async function signIn(key: string): Promise<string> {
  const res = await f.h.app.request(`${ORIGIN}/dashboard/login`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", origin: ORIGIN },
    body: new URLSearchParams({ api_key: key }).toString(),
  });
  expect(res.status).toBe(303);
  const cookie = res.headers.get("set-cookie") ?? "";
  return cookie.split(";")[0]!;
}

async function page(path: string, cookie: string) {
  const res = await f.h.app.request(`${ORIGIN}${path}`, { headers: { cookie } });
  return { res, html: await res.text() };
}

function post(path: string, cookie: string, form: Record<string, string>, origin = ORIGIN) {
  return f.h.app.request(`${ORIGIN}${path}`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", origin, cookie },
    body: new URLSearchParams(form).toString(),
  });
}

/** The session cookie plus the flash cookie an action's response set. */
function withFlash(res: Response, cookie: string): string {
  return `${(res.headers.get("set-cookie") ?? "").split(";")[0]}; ${cookie}`;
}

/** Every attribute `name` of the elements matching a simple `<tag class="cls"` opening, in order. */
function attributes(html: string, pattern: RegExp): Array<Record<string, string>> {
  return [...html.matchAll(pattern)].map((m) =>
    Object.fromEntries([...m[0].matchAll(/([\w-]+)="([^"]*)"/g)].map((a) => [a[1]!, a[2]!])),
  );
}

function chart(html: string, id: string): string {
  const start = html.indexOf(`<svg id="${id}"`);
  expect(start, `chart ${id} is on the page`).toBeGreaterThan(-1);
  return html.slice(start, html.indexOf("</svg>", start));
}

describe("the dashboard", () => {
  it("sends a visitor without a session to the sign-in form, and refuses a wrong key there", async () => {
    const res = await f.h.app.request(`${ORIGIN}/dashboard`);
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/dashboard/login");
    const login = await f.h.app.request(`${ORIGIN}/dashboard/login`);
    expect(await login.text()).toContain('name="api_key"');
    const wrong = await f.h.app.request(`${ORIGIN}/dashboard/login`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: ORIGIN },
      body: `api_key=lk_${"x".repeat(40)}`,
    });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get("set-cookie")).toBeNull();
    expect(await wrong.text()).toContain("Incorrect or revoked API key");
    // Something that is not a key at all is told so in the form's terms, not the API's header ones.
    const garbage = await f.h.app.request(`${ORIGIN}/dashboard/login`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: ORIGIN },
      body: "api_key=garbage",
    });
    expect(garbage.status).toBe(401);
    const said = await garbage.text();
    expect(said).toContain("That is not a Luminet API key");
    expect(said).not.toContain("Authorization header");
  });

  it("signs in to a signed HttpOnly SameSite=Strict cookie that does not hold the key, Secure behind TLS", async () => {
    const res = await f.h.app.request(`${ORIGIN}/dashboard/login`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: ORIGIN },
      body: `api_key=${f.h.keys.acme}`,
    });
    const cookie = res.headers.get("set-cookie") ?? "";
    expect(cookie).toMatch(/^luminet_session=/);
    expect(cookie).toContain("HttpOnly");
    expect(cookie).toContain("SameSite=Strict");
    expect(cookie).not.toContain(f.h.keys.acme.slice(3));
    // Over plain http it cannot be Secure (the browser would drop it); behind a TLS proxy it is.
    expect(cookie).not.toContain("Secure");
    const proxied = await f.h.app.request(`${ORIGIN}/dashboard/login`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        origin: ORIGIN,
        "x-forwarded-proto": "https",
      },
      body: `api_key=${f.h.keys.acme}`,
    });
    expect(proxied.headers.get("set-cookie")).toContain("Secure");
    const { res: ok } = await page("/dashboard", cookie.split(";")[0]!);
    expect(ok.status).toBe(200);
    // A cookie whose key id was changed fails its signature.
    const forged = cookie
      .split(";")[0]!
      .replace(/=([0-9a-f])/, (_, c: string) => `=${c === "a" ? "b" : "a"}`);
    const { res: refused } = await page("/dashboard", forged);
    expect(refused.status).toBe(303);
  });

  it("ends a session when its key is revoked", async () => {
    const { key, record } = await createApiKey(f.h.db, { orgId: "acme", name: "short-lived" });
    const cookie = await signIn(key);
    expect((await page("/dashboard", cookie)).res.status).toBe(200);
    await revokeApiKey(f.h.db, "acme", record.prefix);
    const after = await page("/dashboard", cookie);
    expect(after.res.status).toBe(303);
    expect(after.res.headers.get("location")).toBe("/dashboard/login?session=ended");
    const login = await page("/dashboard/login?session=ended", "");
    expect(login.html).toContain("Your session ended: its API key was revoked");
  });

  it("answers a page it does not have with its own HTML 404, leading back to the dashboard", async () => {
    const cookie = await signIn(f.h.keys.acme);
    for (const path of ["/dashboard/nope", "/dashboard/adapter", "/dashboard/usage/extra"]) {
      const { res, html } = await page(path, cookie);
      expect(res.status, path).toBe(404);
      expect(res.headers.get("content-type"), path).toMatch(/^text\/html/);
      expect(html).toContain(`There is no dashboard page at ${path}.`);
      expect(html).toContain('<a href="/dashboard">Back to the dashboard</a>');
    }
  });

  it("shows the numbers of GET /v1/usage, with one bar per day of the period", async () => {
    const cookie = await signIn(f.h.keys.acme);
    const { html } = await page("/dashboard?days=30", cookie);
    const today = new Date(Math.floor(Date.now() / 86_400_000) * 86_400_000);
    const start = new Date(today.getTime() - 29 * 86_400_000).toISOString().slice(0, 10);
    const end = new Date(today.getTime() + 86_400_000).toISOString().slice(0, 10);
    const api = await f.h.app.request(`/v1/usage?group_by=day&start=${start}&end=${end}`, {
      headers: { authorization: `Bearer ${f.h.keys.acme}` },
    });
    const report = (await api.json()) as UsageReport;
    expect(report.total.requests).toBe(4);

    const days = attributes(chart(html, "tokens-by-day"), /<g class="bar"[^>]*>/g);
    expect(days).toHaveLength(30);
    expect(days.reduce((sum, d) => sum + Number(d["data-input"]), 0)).toBe(report.total.input_tokens);
    expect(days.reduce((sum, d) => sum + Number(d["data-output"]), 0)).toBe(report.total.output_tokens);
    for (const row of report.data) {
      const bar = days.find((d) => d["data-day"] === row.day);
      expect(Number(bar?.["data-input"])).toBe(row.input_tokens);
    }
    const costs = attributes(chart(html, "cost-by-day"), /<g class="bar"[^>]*>/g);
    expect(costs.reduce((sum, d) => sum + Number(d["data-cost-micros"]), 0)).toBe(report.total.cost_micros);
    expect(html).toContain(`data-total="input_tokens">${report.total.input_tokens.toLocaleString("en-US")}<`);
    expect(html).toContain(`data-total="cost_usd">$${report.total.cost_usd}<`);
    // The prompt cache's share of the input, in total and per adapter (the fixture's 512 + 48 of 2,490).
    expect(report.total.cached_input_tokens).toBe(560);
    expect(html).toContain(`data-total="cached_input_tokens">560<`);
    expect(html).toContain("(22.5%)");
    expect(html).toMatch(/data-adapter="support-v1">[\s\S]*?data-cached-input="512">512</);
    expect(html).toMatch(/data-adapter="legal-v2">[\s\S]*?data-cached-input="48">48</);

    const byAdapter = attributes(chart(html, "tokens-by-adapter"), /<g class="bar"[^>]*>/g);
    expect(byAdapter.map((b) => [b["data-adapter"], Number(b["data-tokens"])])).toEqual([
      ["support-v1", 2800],
      ["legal-v2", 500],
      ["", 100],
    ]);
    expect(html).not.toContain("theirs");
    // A shorter period draws fewer days.
    expect(
      attributes(
        chart((await page("/dashboard?days=7", cookie)).html, "tokens-by-day"),
        /<g class="bar"[^>]*>/g,
      ),
    ).toHaveLength(7);
  });

  it("lists what each API key spent, by key id, and by name for an admin", async () => {
    // One request on the admin key, whose name only an admin key may read.
    const adminKey = (await listApiKeys(f.h.db, "acme")).find((key) => key.name === "admin")!;
    const today = Date.now();
    await f.h.workerBus.publishUsage(
      usageEvent({
        org: "acme",
        base: BASE,
        api_key_id: adminKey.id,
        input_tokens: 5000,
        output_tokens: 1000,
        started_ms: today - 1000,
        finished_ms: today,
      }),
    );
    await expect.poll(async () => (await orgTotals(f.h.db, "acme")).rows, { timeout: 10_000 }).toBe(5);
    const api = await f.h.app.request("/v1/usage?group_by=key", {
      headers: { authorization: `Bearer ${f.h.keys.acme}` },
    });
    const byKey = ((await api.json()) as UsageReport).data;
    const rows = (html: string) =>
      attributes(html.slice(html.indexOf('id="by-key"')), /<tr data-key="[^"]*"/g).map((r) => r["data-key"]);
    const plain = (await page("/dashboard", await signIn(f.h.keys.acme))).html;
    // Most expensive first: the admin key's 5,000 + 1,000 tokens cost more than the fixture's four requests.
    expect(rows(plain)).toEqual([adminKey.id, "key-1"]);
    expect(byKey.map((row) => row.api_key_id).sort()).toEqual([adminKey.id, "key-1"].sort());
    const adminRow = byKey.find((row) => row.api_key_id === adminKey.id)!;
    expect(plain).toContain(`data-cost-usd="${adminRow.cost_usd}"`);
    expect(plain).not.toContain(`${adminKey.prefix}… (admin)`);
    const admin = (await page("/dashboard", await signIn(f.h.keys.acmeAdmin))).html;
    expect(admin).toContain(`${adminKey.prefix}… (admin)`);
  });

  it("says when the operator withheld the priority tier from the org, and not otherwise", async () => {
    const cookie = await signIn(f.h.keys.acme);
    const setPriority = async (allowed: boolean) => {
      await setPriorityTier(f.h.db, "acme", allowed);
      // The gateway reads it with the caller's limits, cached for 30 s: forget them, as a change made
      // 30 s ago would have been.
      const keys = await f.h.db.select({ id: apiKeys.id }).from(apiKeys).where(eq(apiKeys.orgId, "acme"));
      for (const key of keys) f.h.deps.callerLimits.forget(key.id);
    };
    expect((await page("/dashboard", cookie)).html).not.toContain('id="priority-withheld"');
    await setPriority(false);
    try {
      expect((await page("/dashboard", cookie)).html).toMatch(
        /id="priority-withheld">The priority tier is not available to this org/,
      );
    } finally {
      await setPriority(true);
    }
    expect((await page("/dashboard", cookie)).html).not.toContain('id="priority-withheld"');
  });

  it("says an org with no usage has none, and that a spent quota refuses its requests", async () => {
    await ensureOrg(f.h.db, "quiet");
    const { key } = await createApiKey(f.h.db, { orgId: "quiet", name: "quiet" });
    await setMonthlyTokenQuota(f.h.db, "quiet", 0);
    const cookie = await signIn(key);
    const spent = (await page("/dashboard", cookie)).html;
    expect(spent).not.toContain('id="top-adapters"');
    const topAdapters = spent.slice(spent.indexOf("<h2>Top adapters</h2>"));
    expect(topAdapters).toMatch(/^<h2>Top adapters<\/h2><p class="muted">No requests in this period.<\/p>/);
    expect(spent).toMatch(/id="quota-spent"[^>]*>The org&#39;s tokens for \d{4}-\d\d are spent/);
    await setMonthlyTokenQuota(f.h.db, "quiet", 1_000);
    expect((await page("/dashboard", cookie)).html).not.toContain('id="quota-spent"');
  });

  it("splits the period's usage by service tier, as GET /v1/usage?group_by=tier does", async () => {
    const api = await f.h.app.request("/v1/usage?group_by=tier", {
      headers: { authorization: `Bearer ${f.h.keys.acme}` },
    });
    const byTier = ((await api.json()) as UsageReport).data;
    const { html } = await page("/dashboard", await signIn(f.h.keys.acme));
    const table = html.slice(html.indexOf('id="by-tier"'));
    const rows = attributes(table, /<tr data-tier="[^"]*"/g).map((r) => r["data-tier"]);
    expect(rows).toEqual(["batch", "default", "priority"]);
    expect(byTier.map((row) => row.service_tier)).toEqual(rows);
    for (const row of byTier) expect(table).toContain(`data-cost-usd="${row.cost_usd}"`);
  });

  it("shows the fleet's workers and tiers, naming only the caller's org's adapters", async () => {
    const cookie = await signIn(f.h.keys.acme);
    const { html } = await page("/dashboard/fleet", cookie);
    expect(html).toContain('data-worker="gpu-0"');
    expect(html).toContain('data-queue-depth="3"');
    expect(html).toMatch(
      /data-tier="slot" data-count="2"><strong>2<\/strong> <span class="tag slot">support-v1<\/span>/,
    );
    expect(html).toContain("+1 of other orgs");
    expect(html).not.toContain("secret-adapter");
  });

  it("lets an admin pin an adapter and set a weight, which the adapter API then reports", async () => {
    const plain = await signIn(f.h.keys.acme);
    expect((await page("/dashboard/adapters", plain)).html).toContain(
      "needs an API key with the &quot;admin&quot; scope",
    );
    const refused = await post("/dashboard/adapters/support-v1/pin", plain, { pinned: "true" });
    expect(refused.status).toBe(403);

    const cookie = await signIn(f.h.keys.acmeAdmin);
    const listed = (await page("/dashboard/adapters", cookie)).html;
    expect(listed).toContain('data-adapter="support-v1" data-pinned="false"');
    expect(listed).toContain("gpu-0: slot");
    const pinned = await post("/dashboard/adapters/support-v1/pin", cookie, { pinned: "true" });
    expect(pinned.status).toBe(303);
    const api = async (name: string) =>
      (await (
        await f.h.app.request(`/v1/adapters/${name}`, {
          headers: { authorization: `Bearer ${f.h.keys.acmeAdmin}` },
        })
      ).json()) as AdapterObject;
    expect((await api("support-v1")).pinned).toBe(true);
    const flashed = (await page("/dashboard/adapters", withFlash(pinned, cookie))).html;
    expect(flashed).toContain("Pinned acme/support-v1");

    await post("/dashboard/adapters/legal-v3/weight", cookie, { weight: "40" });
    expect((await api("legal-v3")).traffic_weight).toBe(40);
    // Only decimal digits: Number() would read " " as 0, "0x10" as 16 and "1e1" as 10.
    for (const weight of ["", " ", "0x10", "1e1", "1.5", "101"]) {
      const refused = await post("/dashboard/adapters/legal-v3/weight", cookie, { weight });
      expect((await page("/dashboard/adapters", withFlash(refused, cookie))).html).toContain(
        `A traffic weight is a whole number from 0 to 100, got &quot;${weight}&quot;.`,
      );
    }
    expect((await api("legal-v3")).traffic_weight).toBe(40);
    // An adapter without an alias has no weight: the API's error comes back as a notice, nothing changes.
    const noAlias = await post("/dashboard/adapters/support-v1/weight", cookie, { weight: "10" });
    const error = (await page("/dashboard/adapters", withFlash(noAlias, cookie))).html;
    expect(error).toContain("has no alias");
  });

  it("deletes only when confirmed (and forced while in use), and refuses forms from another origin", async () => {
    const cookie = await signIn(f.h.keys.acmeAdmin);
    const crossSite = await post(
      "/dashboard/adapters/legal-v3/delete",
      cookie,
      { confirm: "yes" },
      "https://evil.example",
    );
    expect(crossSite.status).toBe(403);
    await post("/dashboard/adapters/legal-v3/delete", cookie, {});
    const live = () =>
      f.h.db
        .select({ deletedAt: adapters.deletedAt })
        .from(adapters)
        .where(and(eq(adapters.orgId, "acme"), eq(adapters.name, "legal-v3")));
    expect((await live())[0]?.deletedAt).toBeNull();
    // It carries 40 of its alias's weight (set above): the API refuses without force, and says why.
    const inUse = await post("/dashboard/adapters/legal-v3/delete", cookie, { confirm: "yes" });
    expect((await live())[0]?.deletedAt).toBeNull();
    const flashed = (await page("/dashboard/adapters", withFlash(inUse, cookie))).html;
    expect(flashed).toContain(
      "carries 40 of alias acme/legal&#39;s traffic weight: unpin it or set its weight to 0",
    );
    expect(flashed).toContain("tick &quot;force&quot; to delete it anyway");
    expect(flashed).not.toContain("luminet adapters");
    await post("/dashboard/adapters/legal-v3/delete", cookie, { confirm: "yes", force: "yes" });
    expect((await live())[0]?.deletedAt).toBeInstanceOf(Date);
  });

  it("lists the org's batches with their progress and files, and cancels one still running", async () => {
    const cookie = await signIn(f.h.keys.acme);
    const upload = async (customIds: string[]) => {
      const form = new FormData();
      form.set("purpose", "batch");
      const lines = customIds.map((id) =>
        JSON.stringify({
          custom_id: id,
          method: "POST",
          url: "/v1/chat/completions",
          body: { model: BASE, messages: [{ role: "user", content: id }], max_tokens: 2 },
        }),
      );
      form.set("file", new Blob([`${lines.join("\n")}\n`]), "in.jsonl");
      const file = await f.h.app.request(`${ORIGIN}/v1/files`, {
        method: "POST",
        headers: { authorization: `Bearer ${f.h.keys.acme}` },
        body: form,
      });
      const { id } = (await file.json()) as { id: string };
      const batch = await f.h.app.request(`${ORIGIN}/v1/batches`, {
        method: "POST",
        headers: { authorization: `Bearer ${f.h.keys.acme}`, "content-type": "application/json" },
        body: JSON.stringify({
          input_file_id: id,
          endpoint: "/v1/chat/completions",
          completion_window: "24h",
        }),
      });
      return ((await batch.json()) as { id: string }).id;
    };
    const done = await upload(["d1", "d2"]);
    await new BatchRunner({
      app: f.h.app,
      db: f.h.db,
      log: f.h.deps.log,
      concurrency: 2,
      leaseMs: 60_000,
      newId: f.h.deps.newRequestId,
      runnerId: "dashboard-test",
    }).drain();
    const running = await upload(["r1"]);

    const { html } = await page("/dashboard/batches", cookie);
    const rows = attributes(html, /<tr data-batch="[^"]*" data-status="[^"]*"/g);
    expect(rows.map((r) => [r["data-batch"], r["data-status"]])).toEqual([
      [running, "in_progress"],
      [done, "completed"],
    ]);
    expect(html).toContain('data-answered="2" data-failed="0" data-total="2"');
    const [output] = attributes(html, /<a href="[^"]*" data-file="output"/g);
    const download = await page(output!.href!, cookie);
    expect(download.res.headers.get("content-disposition")).toContain("attachment");
    expect(
      download.html
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l).custom_id),
    ).toEqual(["d1", "d2"]);
    // Another org's session sees none of them, nor their files.
    const other = await signIn(f.h.keys.other);
    expect((await page("/dashboard/batches", other)).html).not.toContain(done);
    expect((await page(output!.href!, other)).res.status).toBe(404);

    const res = await post(`/dashboard/batches/${running}/cancel`, cookie, {});
    expect(res.status).toBe(303);
    const after = await page("/dashboard/batches", withFlash(res, cookie));
    expect(after.html).toContain(`Cancelling ${running}`);
    expect(attributes(after.html, /<tr data-batch="[^"]*" data-status="[^"]*"/g)[0]).toMatchObject({
      "data-status": "cancelling",
    });
  });

  it("logs the org's stored chat completions and responses, newest first a page at a time, each readable whole", async () => {
    const cookie = await signIn(f.h.keys.acme);
    const api = (path: string, body: object) =>
      f.h.app.request(`${ORIGIN}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${f.h.keys.acme}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const chat = (await (
      await api("/v1/chat/completions", {
        model: BASE,
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Tell me <b>about</b> logs" },
        ],
        max_tokens: 3,
        store: true,
        metadata: { ticket: "T-42" },
      })
    ).json()) as { id: string; choices: [{ message: { content: string } }] };
    const unstored = (await (
      await api("/v1/chat/completions", { model: BASE, messages: [{ role: "user", content: "not kept" }] })
    ).json()) as { id: string };
    const response = (await (
      await api("/v1/responses", {
        model: BASE,
        instructions: "Answer.",
        input: "A response",
        max_output_tokens: 2,
      })
    ).json()) as { id: string };

    const { html } = await page("/dashboard/logs", cookie);
    const rows = attributes(html, /<tr data-log="[^"]*"/g).map((r) => r["data-log"]);
    expect(rows).toEqual([chat.id]);
    expect(html).not.toContain(unstored.id);
    // Text is escaped, not markup.
    expect(html).toContain("Tell me &lt;b&gt;about&lt;/b&gt; logs");
    expect(html).toContain("ticket: T-42");
    const detail = await page(`/dashboard/logs/chat/${chat.id}`, cookie);
    expect(detail.res.status).toBe(200);
    expect(attributes(detail.html, /<tr data-role="[^"]*"/g).map((r) => r["data-role"])).toEqual([
      "system",
      "user",
      "assistant",
    ]);
    expect(detail.html).toContain(chat.choices[0].message.content);

    const responses = await page("/dashboard/logs?kind=responses", cookie);
    expect(attributes(responses.html, /<tr data-log="[^"]*"/g).map((r) => r["data-log"])).toContain(
      response.id,
    );
    const one = await page(`/dashboard/logs/responses/${response.id}`, cookie);
    expect(attributes(one.html, /<tr data-role="[^"]*"/g).map((r) => r["data-role"])).toEqual([
      "instructions",
      "user",
      "assistant",
    ]);

    // Another org sees none of them.
    const other = await signIn(f.h.keys.other);
    expect((await page("/dashboard/logs", other)).html).not.toContain(chat.id);
    expect((await page(`/dashboard/logs/chat/${chat.id}`, other)).res.status).toBe(404);
    expect((await page(`/dashboard/logs/responses/${response.id}`, other)).res.status).toBe(404);

    // 50 to a page, then an "Older" link to the rest.
    const start = Date.now();
    for (let k = 0; k < 51; k++) {
      await saveChatCompletion(f.h.db, "acme", {
        completion: {
          id: `chatcmpl-paged-${String(k).padStart(2, "0")}`,
          object: "chat.completion",
          created: Math.floor((start + k * 1000) / 1000),
          model: BASE,
          choices: [
            {
              index: 0,
              message: { role: "assistant", content: `answer ${k}`, refusal: null },
              logprobs: null,
              finish_reason: "stop",
            },
          ],
          usage: {
            prompt_tokens: 3,
            completion_tokens: 2,
            total_tokens: 5,
            prompt_tokens_details: { cached_tokens: 0 },
          },
        },
        request: {
          temperature: 1,
          top_p: 1,
          seed: null,
          presence_penalty: 0,
          frequency_penalty: 0,
          tools: null,
          tool_choice: null,
          response_format: null,
          input_user: null,
        },
        messages: [{ role: "user", content: `question ${k}` }],
        metadata: {},
        createdAt: new Date(start + 60_000 + k * 1000),
      });
    }
    const first = await page("/dashboard/logs", cookie);
    const firstRows = attributes(first.html, /<tr data-log="[^"]*"/g).map((r) => r["data-log"]);
    expect(firstRows).toHaveLength(50);
    expect(firstRows[0]).toBe("chatcmpl-paged-50");
    const [older] = attributes(first.html, /<a href="[^"]*" rel="next"/g);
    const second = await page(older!.href!.replaceAll("&amp;", "&"), cookie);
    expect(attributes(second.html, /<tr data-log="[^"]*"/g).map((r) => r["data-log"])).toEqual([
      "chatcmpl-paged-00",
      chat.id,
    ]);
    expect(second.html).not.toContain('rel="next"');
  });

  it("lets an admin add a webhook endpoint (its secret shown once), see its deliveries and delete it", async () => {
    // A key without the admin scope follows the Webhooks link to a page that says what it needs, as the
    // Adapters link does; its forms are still refused.
    const plain = await signIn(f.h.keys.acme);
    const explained = await page("/dashboard/webhooks", plain);
    expect(explained.res.status).toBe(200);
    expect(explained.html).toContain(
      "Managing webhooks needs an API key with the &quot;admin&quot; scope; sign in with one to add and delete your org&#39;s endpoints and see what was sent to them.",
    );
    expect(explained.html).toContain('<a href="/dashboard/webhooks" class="active">Webhooks</a>');
    expect((await post("/dashboard/webhooks", plain, { url: "https://hooks.invalid/in" })).status).toBe(403);

    const cookie = await signIn(f.h.keys.acmeAdmin);
    const refused = await post("/dashboard/webhooks", cookie, { url: "http://192.168.1.10/in" });
    expect(await refused.text()).toContain("url must be a public address");
    expect(await listWebhooks(f.h.db, "acme")).toEqual([]);

    const form = new URLSearchParams([
      ["url", "https://hooks.invalid/in"],
      ["events", "batch.completed"],
      ["events", "response.failed"],
    ]);
    const added = await f.h.app.request(`${ORIGIN}/dashboard/webhooks`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: ORIGIN, cookie },
      body: form.toString(),
    });
    const html = await added.text();
    const [endpoint] = await listWebhooks(f.h.db, "acme");
    expect(endpoint).toMatchObject({
      url: "https://hooks.invalid/in",
      events: ["batch.completed", "response.failed"],
    });
    const secret = /whsec_[A-Za-z0-9+/=]+/.exec(html)?.[0];
    expect(secret).toHaveLength("whsec_".length + 44);
    // Shown on that page only.
    expect((await page("/dashboard/webhooks", cookie)).html).not.toContain(secret);

    // An event for it: the sender cannot resolve the host, so it is retried, its error on the page.
    await f.h.db.transaction((tx) =>
      queueEvent(tx, "acme", { id: "evt_dash", type: "batch.completed", subject: "batch_x", at: new Date() }),
    );
    await new WebhookSender({ db: f.h.db, log: f.h.deps.log }).drain();
    const after = (await page("/dashboard/webhooks", cookie)).html;
    const [row] = attributes(after, /<tr data-event="[^"]*" data-endpoint="[^"]*" data-state="[^"]*"/g);
    expect(row).toMatchObject({
      "data-event": "evt_dash",
      "data-endpoint": endpoint!.id,
      "data-state": "retrying",
    });
    expect(after).toContain("batch_x");
    expect(after).toContain("next in");

    const deleted = await post(`/dashboard/webhooks/${endpoint!.id}/delete`, cookie, {});
    expect(deleted.status).toBe(303);
    expect((await page("/dashboard/webhooks", withFlash(deleted, cookie))).html).toContain(
      `Deleted ${endpoint!.id}.`,
    );
    expect(await listWebhooks(f.h.db, "acme")).toEqual([]);
  });
});
