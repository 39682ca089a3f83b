// The dashboard in headless Chromium (playwright-core driving the system's chromium, which .ci/run
// installs): sign in through the form, the charts render as SVG with one bar per day and per adapter, the
// numbers on the page equal GET /v1/usage, the fleet shows the worker, pinning from the adapters page
// shows up in the adapter API, the org's storage is shown against its limits, a stored chat completion is
// listed, opened and deleted from the logs page, and a batch is shown and cancelled from the batches page. Screenshots of each page go to test-artifacts/ (git-ignored) for a person
// to look at.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { eq } from "drizzle-orm";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_MAX_ORG_ADAPTER_BYTES } from "../../gateway/adapter-storage-quota.ts";
import {
  conversationBytesHeld,
  DEFAULT_MAX_ORG_CONVERSATION_BYTES,
} from "../../gateway/conversation-storage-quota.ts";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import { getOrg, setStorageLimits } from "../../gateway/orgs.ts";
import { DEFAULT_MAX_ORG_RESPONSE_BYTES } from "../../gateway/response-storage-quota.ts";
import type { UsageReport } from "../../meter/usage-report.ts";
import type { AdapterObject } from "../../schema/adapter-api.ts";
import { adapters } from "../../schema/db.ts";
import { createDashboardFixture, type DashboardFixture } from "../support/dashboard-fixture.ts";
import { BASE } from "../support/gateway-harness.ts";

/** CHROMIUM_PATH, or Debian's chromium found on PATH; undefined when there is none (the suite skips). */
function findChromium(): string | undefined {
  const onPath = ["chromium", "chromium-browser"].flatMap((name) =>
    (process.env.PATH ?? "").split(delimiter).map((dir) => join(dir, name)),
  );
  for (const candidate of [process.env.CHROMIUM_PATH, ...onPath]) {
    if (candidate && existsSync(candidate) && spawnSync(candidate, ["--version"]).status === 0)
      return candidate;
  }
  return undefined;
}

const executablePath = findChromium();
const artifacts = join(process.cwd(), "test-artifacts");
const DAY_MS = 86_400_000;

describe.skipIf(!executablePath)("the dashboard in Chromium", () => {
  let f: DashboardFixture;
  let served: ServedApp;
  let profile: string;
  let browser: BrowserContext;

  beforeAll(async () => {
    f = await createDashboardFixture();
    served = await serveApp(f.h.app, 0, "127.0.0.1");
    profile = mkdtempSync(join(tmpdir(), "luminet-chromium-"));
    mkdirSync(artifacts, { recursive: true });
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: executablePath!,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1280, height: 900 },
    });
  });

  afterAll(async () => {
    await browser?.close();
    await served?.close();
    await f?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  async function signIn(key: string): Promise<Page> {
    const page = await browser.newPage();
    await page.goto(`${served.url}/dashboard`);
    expect(new URL(page.url()).pathname).toBe("/dashboard/login");
    await page.fill("#api_key", key);
    await Promise.all([page.waitForURL(`${served.url}/dashboard`), page.click("button[type=submit]")]);
    return page;
  }

  async function signOut(page: Page): Promise<void> {
    await Promise.all([page.waitForURL(/\/dashboard\/login$/), page.click("header button[type=submit]")]);
    await page.close();
  }

  async function api<T>(path: string, key: string): Promise<T> {
    const res = await fetch(`${served.url}${path}`, { headers: { authorization: `Bearer ${key}` } });
    expect(res.status).toBe(200);
    return (await res.json()) as T;
  }

  it("renders usage charts whose bars and totals equal GET /v1/usage", async () => {
    const page = await signIn(f.h.keys.acme);
    const today = Math.floor(Date.now() / DAY_MS) * DAY_MS;
    const start = new Date(today - 29 * DAY_MS).toISOString().slice(0, 10);
    const end = new Date(today + DAY_MS).toISOString().slice(0, 10);
    const byDay = await api<UsageReport>(`/v1/usage?group_by=day&start=${start}&end=${end}`, f.h.keys.acme);
    const byAdapter = await api<UsageReport>(
      `/v1/usage?group_by=adapter&start=${start}&end=${end}`,
      f.h.keys.acme,
    );

    const days = await page.$$eval("svg#tokens-by-day g.bar", (bars) =>
      bars.map((bar) => ({
        day: bar.getAttribute("data-day"),
        input: Number(bar.getAttribute("data-input")),
        output: Number(bar.getAttribute("data-output")),
        // What the browser drew: the stacked rectangles' heights.
        drawn: [...bar.querySelectorAll("rect:not(.hit)")].reduce(
          (sum, rect) => sum + rect.getBoundingClientRect().height,
          0,
        ),
      })),
    );
    expect(days).toHaveLength(30);
    for (const row of byDay.data) {
      const bar = days.find((d) => d.day === row.day);
      expect(bar).toMatchObject({ input: row.input_tokens, output: row.output_tokens });
      expect(bar!.drawn).toBeGreaterThan(0);
    }
    expect(days.filter((d) => d.drawn > 0)).toHaveLength(byDay.data.length);
    const chartBox = await page.locator("svg#tokens-by-day").boundingBox();
    expect(chartBox!.width).toBeGreaterThan(600);

    const adapters = await page.$$eval("svg#tokens-by-adapter g.bar", (bars) =>
      bars.map((bar) => [bar.getAttribute("data-adapter"), Number(bar.getAttribute("data-tokens"))]),
    );
    expect(adapters).toHaveLength(byAdapter.data.length);
    expect(adapters).toEqual(
      [...byAdapter.data]
        .sort((a, b) => b.total_tokens - a.total_tokens)
        .map((row) => [row.adapter ?? "", row.total_tokens]),
    );
    const totals = await page.$$eval("[data-total]", (cards) =>
      Object.fromEntries(cards.map((card) => [card.getAttribute("data-total"), card.textContent?.trim()])),
    );
    expect(totals).toEqual({
      requests: byDay.total.requests.toLocaleString("en-US"),
      input_tokens: byDay.total.input_tokens.toLocaleString("en-US"),
      cached_input_tokens: byDay.total.cached_input_tokens.toLocaleString("en-US"),
      output_tokens: byDay.total.output_tokens.toLocaleString("en-US"),
      cost_usd: `$${byDay.total.cost_usd}`,
    });
    // The tooltip a person sees over a day names that day's numbers.
    const busiest = byDay.data.reduce((a, b) => (a.total_tokens >= b.total_tokens ? a : b));
    expect(
      await page.locator(`svg#tokens-by-day g.bar[data-day="${busiest.day}"] > title`).textContent(),
    ).toContain(busiest.input_tokens.toLocaleString("en-US"));
    await page.screenshot({ path: join(artifacts, "dashboard-usage.png"), fullPage: true });

    await page.click("header nav a[href='/dashboard/fleet']");
    await page.waitForURL(`${served.url}/dashboard/fleet`);
    expect(await page.locator("tr[data-worker='gpu-0'] td[data-queue-depth]").textContent()).toBe("3");
    expect(await page.locator("svg g.bar[data-worker='gpu-0']").count()).toBe(1);
    await page.screenshot({ path: join(artifacts, "dashboard-fleet.png"), fullPage: true });
    await signOut(page);
  });

  it("shows what the org stores against its limits: its own where set, else the gateway's", async () => {
    const post = async (path: string, body: RequestInit["body"], contentType?: string) => {
      const res = await fetch(`${served.url}${path}`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${f.h.keys.acme}`,
          ...(contentType ? { "content-type": contentType } : {}),
        },
        body,
      });
      expect(res.status, await res.clone().text()).toBe(200);
    };
    const upload = new FormData();
    const content = `${JSON.stringify({ custom_id: "a", method: "POST", url: "/v1/chat/completions", body: {} })}\n`;
    upload.set("purpose", "batch");
    upload.set("file", new Blob([content]), "storage.jsonl");
    await post("/v1/files", upload);
    await post(
      "/v1/conversations",
      JSON.stringify({ items: [{ type: "message", role: "user", content: "hi" }] }),
      "application/json",
    );
    await setStorageLimits(f.h.db, "acme", { files: 10 * 1024 ** 2 });
    try {
      const page = await signIn(f.h.keys.acme);
      const rows = await page.$$eval("#storage tr[data-storage]", (trs) =>
        trs.map((tr) => ({
          kind: tr.getAttribute("data-storage"),
          bytes: Number(tr.getAttribute("data-bytes")),
          limit: Number(tr.getAttribute("data-limit")),
          shown: tr.querySelector("td.num")?.textContent?.trim(),
        })),
      );
      const adapters = (await api<{ data: AdapterObject[] }>("/v1/adapters", f.h.keys.acmeAdmin)).data;
      expect(rows).toEqual([
        {
          kind: "files",
          bytes: Buffer.byteLength(content),
          limit: 10 * 1024 ** 2,
          shown: `${Buffer.byteLength(content)} B of 10.0 MiB`,
        },
        {
          kind: "adapters",
          bytes: adapters.reduce((sum, a) => sum + (a.bytes ?? 0), 0),
          limit: DEFAULT_MAX_ORG_ADAPTER_BYTES,
          shown: expect.stringMatching(/ of 100\.0 GiB$/),
        },
        {
          kind: "conversations",
          bytes: await conversationBytesHeld(f.h.db, "acme"),
          limit: DEFAULT_MAX_ORG_CONVERSATION_BYTES,
          shown: expect.stringMatching(/ B of 10\.0 GiB$/),
        },
        {
          kind: "responses",
          bytes: (await getOrg(f.h.db, "acme"))!.storage.responses.bytes,
          limit: DEFAULT_MAX_ORG_RESPONSE_BYTES,
          shown: expect.stringMatching(/ of 100\.0 GiB$/),
        },
      ]);
      expect(rows[2]!.bytes).toBeGreaterThan(0);
      await signOut(page);
    } finally {
      await setStorageLimits(f.h.db, "acme", { files: null });
    }
  });

  it("pins an adapter from the adapters page, and the adapter API shows it pinned", async () => {
    const page = await signIn(f.h.keys.acmeAdmin);
    await page.click("header nav a[href='/dashboard/adapters']");
    await page.waitForURL(`${served.url}/dashboard/adapters`);
    const row = page.locator("tr[data-adapter='support-v1']");
    expect(await row.getAttribute("data-pinned")).toBe("false");
    await Promise.all([
      page.waitForURL(`${served.url}/dashboard/adapters`),
      row.locator("button[data-action=pin]").click(),
    ]);
    expect(await page.locator(".notice").textContent()).toContain("Pinned acme/support-v1");
    expect(await page.locator("tr[data-adapter='support-v1']").getAttribute("data-pinned")).toBe("true");
    const adapter = await api<AdapterObject>("/v1/adapters/support-v1", f.h.keys.acmeAdmin);
    expect(adapter.pinned).toBe(true);
    await page.screenshot({ path: join(artifacts, "dashboard-adapters.png"), fullPage: true });
    await signOut(page);
  });

  it("keeps every column and action of the adapters page in the window when a name is as long as names go", async () => {
    const long = `${"x".repeat(60)}-end`;
    await f.h.addAdapter({ name: long, alias: `${"y".repeat(60)}-als`, trafficWeight: 0 });
    try {
      const page = await signIn(f.h.keys.acmeAdmin);
      await page.goto(`${served.url}/dashboard/adapters`);
      expect(await page.$eval("html", (html) => html.scrollWidth)).toBeLessThanOrEqual(1280);
      for (const name of [long, "support-v1"]) {
        const pin = await page.locator(`tr[data-adapter='${name}'] button[data-action=pin]`).boundingBox();
        expect(pin!.x + pin!.width, `the pin button of ${name}`).toBeLessThanOrEqual(1280);
      }
      await page.screenshot({ path: join(artifacts, "dashboard-adapters-long-name.png"), fullPage: true });
      await signOut(page);
    } finally {
      await f.h.db.delete(adapters).where(eq(adapters.name, long));
    }
  });

  it("shows a batch with its progress, and cancels it from the batches page", async () => {
    const line = JSON.stringify({
      custom_id: "browser-1",
      method: "POST",
      url: "/v1/chat/completions",
      body: { model: BASE, messages: [{ role: "user", content: "hi" }], max_tokens: 2 },
    });
    const form = new FormData();
    form.set("purpose", "batch");
    form.set("file", new Blob([`${line}\n`]), "browser.jsonl");
    const auth = { authorization: `Bearer ${f.h.keys.acme}` };
    const file = (await (
      await fetch(`${served.url}/v1/files`, { method: "POST", headers: auth, body: form })
    ).json()) as {
      id: string;
    };
    const batch = (await (
      await fetch(`${served.url}/v1/batches`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({
          input_file_id: file.id,
          endpoint: "/v1/chat/completions",
          completion_window: "24h",
        }),
      })
    ).json()) as { id: string };
    const page = await signIn(f.h.keys.acme);
    await page.click("header nav a[href='/dashboard/batches']");
    await page.waitForURL(`${served.url}/dashboard/batches`);
    const row = page.locator(`tr[data-batch='${batch.id}']`);
    expect(await row.getAttribute("data-status")).toBe("in_progress");
    expect(await row.locator("progress").getAttribute("max")).toBe("1");
    await page.screenshot({ path: join(artifacts, "dashboard-batches.png"), fullPage: true });
    await Promise.all([
      page.waitForURL(`${served.url}/dashboard/batches`),
      row.locator("button[data-action=cancel]").click(),
    ]);
    expect(await page.locator(".notice").textContent()).toContain(`Cancelling ${batch.id}`);
    expect(await page.locator(`tr[data-batch='${batch.id}']`).getAttribute("data-status")).toBe("cancelling");
    await signOut(page);
  });

  it("lists a stored chat completion on the logs page, opens it whole and deletes it", async () => {
    const res = await fetch(`${served.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${f.h.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: BASE,
        messages: [
          { role: "system", content: "You answer support tickets." },
          { role: "user", content: "My invoice is wrong." },
        ],
        max_tokens: 4,
        store: true,
        metadata: { ticket: "T-7" },
      }),
    });
    const completion = (await res.json()) as { id: string; choices: [{ message: { content: string } }] };
    const page = await signIn(f.h.keys.acme);
    await page.click("header nav a[href='/dashboard/logs']");
    await page.waitForURL(`${served.url}/dashboard/logs`);
    const row = page.locator(`tr[data-log='${completion.id}']`);
    expect(await row.textContent()).toContain("My invoice is wrong.");
    expect(await row.textContent()).toContain("ticket: T-7");
    await page.screenshot({ path: join(artifacts, "dashboard-logs.png"), fullPage: true });
    await Promise.all([page.waitForURL(/\/dashboard\/logs\/chat\//), row.locator("a").first().click()]);
    const roles = await page
      .locator("tr[data-role]")
      .evaluateAll((rows) => rows.map((r) => r.getAttribute("data-role")));
    expect(roles).toEqual(["system", "user", "assistant"]);
    expect(await page.locator("tr[data-role='assistant'] pre").textContent()).toBe(
      completion.choices[0].message.content,
    );
    await page.screenshot({ path: join(artifacts, "dashboard-log.png"), fullPage: true });
    // Deleting it frees what it held, as DELETE /v1/chat/completions/{id} does.
    const held = (await getOrg(f.h.db, "acme"))!.storage.responses.bytes;
    await Promise.all([
      page.waitForURL(`${served.url}/dashboard/logs?kind=chat`),
      page.click("button[data-action=delete]"),
    ]);
    expect(await page.locator(".notice").textContent()).toContain(`Deleted ${completion.id}.`);
    expect(await page.locator(`tr[data-log='${completion.id}']`).count()).toBe(0);
    const gone = await fetch(`${served.url}/v1/chat/completions/${completion.id}`, {
      headers: { authorization: `Bearer ${f.h.keys.acme}` },
    });
    expect(gone.status).toBe(404);
    expect((await getOrg(f.h.db, "acme"))!.storage.responses.bytes).toBeLessThan(held);
    await signOut(page);
  });

  it("adds a webhook endpoint from the webhooks page, showing its secret once", async () => {
    const page = await signIn(f.h.keys.acmeAdmin);
    await page.click("header nav a[href='/dashboard/webhooks']");
    await page.waitForURL(`${served.url}/dashboard/webhooks`);
    await page.fill("#add-webhook input[name=url]", "https://hooks.example.com/luminet");
    await page.check("#add-webhook input[value='batch.completed']");
    await Promise.all([
      page.waitForURL(`${served.url}/dashboard/webhooks`),
      page.click("button[data-action=add]"),
    ]);
    expect(await page.locator(".notice").textContent()).toMatch(/signing secret, shown only now: whsec_/);
    const row = page.locator("tr[data-webhook]");
    expect(await row.locator("td").nth(1).textContent()).toBe("https://hooks.example.com/luminet");
    expect(await row.locator(".tag").allTextContents()).toEqual(["batch.completed"]);
    await page.screenshot({ path: join(artifacts, "dashboard-webhooks.png"), fullPage: true });
    await signOut(page);
  });
});
