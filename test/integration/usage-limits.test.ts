// Limits at admission through the gateway app, on PGlite and (when DATABASE_URL is set) real Postgres,
// where 50 parallel requests really race in the database: an org's monthly token quota admits exactly the
// requests whose prompt + max_tokens fit, the meter's settlement frees exactly the unused part, and a key's
// requests and tokens per minute admit exactly their limit in a window, with OpenAI's 429 bodies and
// x-ratelimit-* headers. A fake worker answers; the meter runs on the same in-process bus.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it, vi } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { InProcessBroker } from "../../bus/in-process.ts";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { createApiKey, ensureOrg, setApiKeyLimits } from "../../gateway/api-keys.ts";
import { createApp } from "../../gateway/app.ts";
import { loadBaseModel } from "../../gateway/base-loader.ts";
import { BaseCatalog } from "../../gateway/bases.ts";
import { gatewayDeps } from "../../gateway/deps.ts";
import { type Meter, startMeter } from "../../meter/meter.ts";
import { quotaStatus, reserveQuota, setMonthlyTokenQuota } from "../../meter/token-quota.ts";
import { writeUsageBatch } from "../../meter/usage-writer.ts";
import type { ErrorBody } from "../../schema/api.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { FAKE_REPLY_TOKENS, FakeWorker } from "../support/fake-worker.ts";
import { usageEvent } from "../support/meter-fixtures.ts";

const postgresUrl = inject("postgresUrl");
const databases: Array<[string, string]> = [
  ["PGlite", "pglite:memory"],
  ...(postgresUrl ? [["Postgres", postgresUrl] as [string, string]] : []),
];

/** Every request: 3 prompt tokens and max_tokens 10, so it reserves 13 and the fake worker uses 3 + 6. */
const PROMPT = [11, 12, 13];
const MAX_TOKENS = 10;
const RESERVES = PROMPT.length + MAX_TOKENS;
const USES = PROMPT.length + FAKE_REPLY_TOKENS;
const PARALLEL = 50;

describe.each(databases)("limits at admission (%s)", (_label, url) => {
  let db: Db;
  let bus: Bus;
  let workerBus: Bus;
  let worker: FakeWorker;
  let meter: Meter;
  let modelDir: string;
  let base: string;
  let idleBase: string;
  let bases: BaseCatalog;
  /** The gateway's clock: fixed, so every request of a test falls in one rate window. */
  let clock = Date.UTC(2030, 0, 15, 12, 0, 30);

  beforeAll(async () => {
    modelDir = mkdtempSync(join(tmpdir(), "luminet-limits-"));
    initTinyModel(modelDir, { shape: "tiny", adapters: 0, rank: 4, seed: 7 });
    db = await openDb(url);
    await migrate(db);
    base = `limits-${randomUUID().slice(0, 8)}`;
    idleBase = `${base}-idle`;
    bases = new BaseCatalog([
      await loadBaseModel(db, { name: base, dir: modelDir }, { contextLength: 256 }),
      await loadBaseModel(db, { name: idleBase, dir: modelDir }, { contextLength: 256 }),
    ]);
    const broker = new InProcessBroker({ heartbeatTtlMs: 600_000 });
    bus = broker.connect();
    workerBus = broker.connect();
    worker = await FakeWorker.start(workerBus, { base });
    meter = await startMeter({ bus, db, flushMs: 5 });
  });

  afterAll(async () => {
    await meter?.stop();
    await worker?.stop();
    await bus?.close();
    await workerBus?.close();
    await db?.close();
    rmSync(modelDir, { recursive: true, force: true });
  });

  async function newOrg(): Promise<string> {
    const org = `o-${randomUUID().slice(0, 12)}`;
    await ensureOrg(db, org);
    return org;
  }

  async function newKey(org: string, limits: { rpm?: number; tpm?: number } = {}): Promise<string> {
    const { key } = await createApiKey(db, {
      orgId: org,
      name: "limits",
      requestsPerMinute: limits.rpm ?? null,
      tokensPerMinute: limits.tpm ?? null,
    });
    return key;
  }

  // A fresh app per use: its limits cache starts empty, as after the 30 s a changed limit takes.
  function gateway() {
    // A request for the idle base waits briefly for a worker to start, then is refused.
    return createApp(gatewayDeps({ db, bus, bases, now: () => clock, limits: { coldStartTimeoutMs: 100 } }));
  }

  async function complete(
    app: ReturnType<typeof gateway>,
    key: string,
    body: Record<string, unknown> = {},
  ): Promise<Response> {
    return await app.request("/v1/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: base, prompt: PROMPT, max_tokens: MAX_TOKENS, ...body }),
    });
  }

  async function parallel(app: ReturnType<typeof gateway>, key: string, n = PARALLEL) {
    const responses = await Promise.all(Array.from({ length: n }, () => complete(app, key)));
    const bodies = await Promise.all(responses.map((res) => res.json() as Promise<Record<string, unknown>>));
    return responses.map((res, i) => ({ res, body: bodies[i]! }));
  }

  function statusCounts(results: Array<{ res: Response }>): Record<number, number> {
    const counts: Record<number, number> = {};
    for (const { res } of results) counts[res.status] = (counts[res.status] ?? 0) + 1;
    return counts;
  }

  /** Publishes the usage the fake worker would have for each request id, and waits for the meter. */
  async function meterUsage(org: string, requestIds: string[]): Promise<void> {
    for (const id of requestIds) {
      const request = worker.received.find((r) => r.id === id);
      expect(request, `the worker received ${id}`).toBeDefined();
      await workerBus.publishUsage(
        usageEvent({
          request_id: id,
          org,
          base,
          api_key_id: request!.api_key_id,
          adapter: null,
          input_tokens: PROMPT.length,
          output_tokens: FAKE_REPLY_TOKENS,
          started_ms: clock,
          finished_ms: clock + 10,
        }),
      );
    }
  }

  const completionId = (body: Record<string, unknown>) => String(body.id).replace(/^cmpl-/, "");

  it("a monthly quota admits exactly the requests that fit among 50 parallel ones", async () => {
    const org = await newOrg();
    const key = await newKey(org);
    const fits = 10;
    // Room for 10 reservations and most of an 11th: the 11th must not squeeze in.
    await setMonthlyTokenQuota(db, org, fits * RESERVES + RESERVES - 1);
    const app = gateway();
    const results = await parallel(app, key);
    expect(statusCounts(results)).toEqual({ 200: fits, 429: PARALLEL - fits });
    const refused = results.find(({ res }) => res.status === 429)!.body as ErrorBody;
    expect(refused.error).toMatchObject({ type: "insufficient_quota", code: "insufficient_quota" });
    expect(refused.error.message).toContain(`needs up to ${RESERVES}`);
    expect(await quotaStatus(db, org, clock)).toMatchObject({ used: 0, reserved: fits * RESERVES });

    // The meter settles each request: its reservation goes, its actual tokens count.
    const admitted = results.filter(({ res }) => res.status === 200).map(({ body }) => completionId(body));
    await meterUsage(org, admitted);
    await vi.waitFor(
      async () => expect(await quotaStatus(db, org, clock)).toMatchObject({ used: fits * USES, reserved: 0 }),
      { timeout: 10_000 },
    );
    // What settlement freed admits exactly that many more.
    const room = fits * RESERVES + RESERVES - 1 - fits * USES;
    const again = await parallel(app, key);
    expect(statusCounts(again)).toEqual({
      200: Math.floor(room / RESERVES),
      429: PARALLEL - Math.floor(room / RESERVES),
    });
  });

  it("n choices reserve n times prompt + max_tokens, all or none, and each choice's usage settles its own", async () => {
    const org = await newOrg();
    const key = await newKey(org);
    // Room for two choices and most of a third.
    await setMonthlyTokenQuota(db, org, 3 * RESERVES - 1);
    const app = gateway();
    const refused = await complete(app, key, { n: 3 });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as ErrorBody).error.message).toContain(`needs up to ${3 * RESERVES}`);
    // The two reservations made before the third failed were given back.
    expect(await quotaStatus(db, org, clock)).toMatchObject({ used: 0, reserved: 0 });

    const admitted = await complete(app, key, { n: 2 });
    expect(admitted.status).toBe(200);
    const id = completionId((await admitted.json()) as Record<string, unknown>);
    expect(await quotaStatus(db, org, clock)).toMatchObject({ used: 0, reserved: 2 * RESERVES });
    await meterUsage(org, [id, `${id}-1`]);
    await vi.waitFor(
      async () => expect(await quotaStatus(db, org, clock)).toMatchObject({ used: 2 * USES, reserved: 0 }),
      { timeout: 10_000 },
    );
  });

  it("a usage event written twice settles its reservation and counts its tokens once", async () => {
    const org = await newOrg();
    await setMonthlyTokenQuota(db, org, 1_000);
    const requestId = randomUUID();
    expect(
      await reserveQuota(db, { requestId, orgId: org, tokens: RESERVES, now: clock, holdMs: 60_000 }),
    ).toBe(true);
    const event = usageEvent({
      request_id: requestId,
      org,
      base,
      input_tokens: PROMPT.length,
      output_tokens: FAKE_REPLY_TOKENS,
      started_ms: clock,
      finished_ms: clock + 10,
    });
    expect((await writeUsageBatch(db, [event, event])).inserted).toBe(1);
    expect((await writeUsageBatch(db, [event])).duplicates).toBe(1);
    expect(await quotaStatus(db, org, clock)).toMatchObject({
      used: USES,
      reserved: 0,
      remaining: 1_000 - USES,
    });
  });

  it("a request no worker started for in time gives its reservation back", async () => {
    const org = await newOrg();
    const key = await newKey(org);
    await setMonthlyTokenQuota(db, org, 1_000);
    const res = await gateway().request("/v1/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: idleBase, prompt: PROMPT, max_tokens: MAX_TOKENS }),
    });
    expect(res.status).toBe(503);
    expect(await quotaStatus(db, org, clock)).toMatchObject({ used: 0, reserved: 0, remaining: 1_000 });
  });

  it("expired reservations are swept when the org runs out of room", async () => {
    const org = await newOrg();
    const key = await newKey(org);
    await setMonthlyTokenQuota(db, org, RESERVES);
    // A request admitted long ago whose usage never came: its hold has passed.
    expect(
      await reserveQuota(db, {
        requestId: randomUUID(),
        orgId: org,
        tokens: RESERVES,
        now: clock - 3_600_000,
        holdMs: 60_000,
      }),
    ).toBe(true);
    const res = await complete(gateway(), key);
    expect(res.status).toBe(200);
    expect(await quotaStatus(db, org, clock)).toMatchObject({ reserved: RESERVES });
  });

  it("a key's requests per minute admit exactly the limit among 50 parallel requests", async () => {
    const org = await newOrg();
    const key = await newKey(org, { rpm: 10 });
    const app = gateway();
    const results = await parallel(app, key);
    expect(statusCounts(results)).toEqual({ 200: 10, 429: PARALLEL - 10 });
    const limited = results.find(({ res }) => res.status === 429)!;
    expect((limited.body as ErrorBody).error).toMatchObject({
      type: "rate_limit_error",
      code: "rate_limit_exceeded",
    });
    expect((limited.body as ErrorBody).error.message).toContain("requests per min (RPM)");
    // 30 s into the minute: the window resets in 30 s.
    expect(limited.res.headers.get("retry-after")).toBe("30");
    expect(limited.res.headers.get("x-ratelimit-limit-requests")).toBe("10");
    expect(limited.res.headers.get("x-ratelimit-remaining-requests")).toBe("0");
    expect(limited.res.headers.get("x-ratelimit-reset-requests")).toBe("30s");
    expect(limited.res.headers.get("x-ratelimit-limit-tokens")).toBeNull();
    const remaining = results
      .filter(({ res }) => res.status === 200)
      .map(({ res }) => Number(res.headers.get("x-ratelimit-remaining-requests")))
      .sort((a, b) => a - b);
    expect(remaining).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    // The next minute is a new window.
    clock += 60_000;
    const next = await complete(app, key);
    expect(next.status).toBe(200);
    expect(next.headers.get("x-ratelimit-remaining-requests")).toBe("9");
  });

  it("a key's tokens per minute count prompt + max_tokens and refuse a request that can never fit", async () => {
    const org = await newOrg();
    const key = await newKey(org, { tpm: 5 * RESERVES });
    const app = gateway();
    const results = await parallel(app, key);
    expect(statusCounts(results)).toEqual({ 200: 5, 429: PARALLEL - 5 });
    const limited = results.find(({ res }) => res.status === 429)!;
    expect((limited.body as ErrorBody).error.message).toContain("tokens per min (TPM)");
    expect(limited.res.headers.get("x-ratelimit-remaining-tokens")).toBe("0");
    expect(limited.res.headers.get("x-ratelimit-limit-requests")).toBeNull();

    clock += 60_000;
    const first = await complete(app, key);
    expect(first.headers.get("x-ratelimit-remaining-tokens")).toBe(String(4 * RESERVES));
    const tooLarge = await complete(app, key, { max_tokens: 5 * RESERVES });
    expect(tooLarge.status).toBe(429);
    expect(((await tooLarge.json()) as ErrorBody).error.message).toContain("Request too large");
    // Waiting cannot make it fit: no Retry-After. Its headers tell the window as it stands.
    expect(tooLarge.headers.get("retry-after")).toBeNull();
    expect(tooLarge.headers.get("x-ratelimit-remaining-tokens")).toBe(String(4 * RESERVES));
    // Refusing it counted nothing.
    const ok = await complete(app, key);
    expect(ok.headers.get("x-ratelimit-remaining-tokens")).toBe(String(3 * RESERVES));
  });

  it("tokenizing, counting input tokens and creating conversations count against the requests per minute too; reading does not", async () => {
    const org = await newOrg();
    const key = await newKey(org, { rpm: 4 });
    const app = gateway();
    const post = (path: string, body: unknown) =>
      app.request(path, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const tokenized = await post("/tokenize", { model: base, prompt: "hello" });
    expect(tokenized.status).toBe(200);
    expect(tokenized.headers.get("x-ratelimit-remaining-requests")).toBe("3");
    expect((await post("/v1/responses/input_tokens", { model: base, input: "hello" })).status).toBe(200);
    expect((await post("/v1/conversations", {})).status).toBe(200);
    // A read is not counted.
    const listed = await app.request("/v1/files", { headers: { authorization: `Bearer ${key}` } });
    expect(listed.status).toBe(200);
    expect(listed.headers.get("x-ratelimit-remaining-requests")).toBeNull();
    expect((await complete(app, key)).status).toBe(200);
    const refused = await post("/tokenize", { model: base, prompt: "hello" });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as ErrorBody).error).toMatchObject({ code: "rate_limit_exceeded" });
    expect(refused.headers.get("retry-after")).toBe("30");
    // Without a per-minute limit nothing is counted or said.
    const free = await newKey(org);
    const unlimited = await app.request("/tokenize", {
      method: "POST",
      headers: { authorization: `Bearer ${free}`, "content-type": "application/json" },
      body: JSON.stringify({ model: base, prompt: "hello" }),
    });
    expect(unlimited.status).toBe(200);
    expect(unlimited.headers.get("x-ratelimit-limit-requests")).toBeNull();
  });

  it("streams carry the x-ratelimit headers, and a changed limit applies to a fresh cache", async () => {
    const org = await newOrg();
    const key = await newKey(org, { rpm: 100 });
    const stream = await complete(gateway(), key, { stream: true });
    expect(stream.status).toBe(200);
    expect(stream.headers.get("content-type")).toContain("text/event-stream");
    expect(stream.headers.get("x-ratelimit-limit-requests")).toBe("100");
    await stream.text();

    await setApiKeyLimits(db, org, key.slice(0, 11), { requestsPerMinute: null, tokensPerMinute: 1_000 });
    const after = await complete(gateway(), key);
    expect(after.headers.get("x-ratelimit-limit-requests")).toBeNull();
    expect(after.headers.get("x-ratelimit-limit-tokens")).toBe("1000");
  });
});
