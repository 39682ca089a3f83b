// The Files and Batch APIs through the official `openai` client against the gateway over HTTP (in-process
// bus, scripted worker), with a batch runner on the same app: files uploaded, listed, read and deleted; a
// batch of mixed-adapter lines run and written back line by line in input order, a bad request among them
// in the error file; bad input files refused whole naming the line; cancel, expiry, a revoked key, and a
// line left running by a runner that died taken again; every batch and file visible to its org only; files
// gone once they expire (30 days for batch files unless asked otherwise) and swept.
import { and, eq } from "drizzle-orm";
import OpenAI, { toFile } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApiKey, ensureOrg } from "../../gateway/api-keys.ts";
import { REQUEST_ID, type RunEnv } from "../../gateway/auth.ts";
import { BatchRunner, type BatchRunnerOptions } from "../../gateway/batch-runner.ts";
import { DueSweep } from "../../gateway/due-sweep.ts";
import { sweepFiles } from "../../gateway/files.ts";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import { setStorageLimits } from "../../gateway/orgs.ts";
import { quietMetrics } from "../../gateway/quiet-metrics.ts";
import { apiKeys, batchRequests, files, usageEvents } from "../../schema/db.ts";
import { FakeWorker, fakeReplyText } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { heldApp } from "../support/held-app.ts";
import { heldReads } from "../support/held-reads.ts";

let h: GatewayHarness;
let worker: FakeWorker;
let served: ServedApp;
let client: OpenAI;
let otherClient: OpenAI;
/** The runners' clock: tests move it past leases and completion windows. */
let clock = Date.now();

beforeAll(async () => {
  h = await createGatewayHarness({ limits: { maxFileBytes: 4096 } });
  worker = await FakeWorker.start(h.workerBus, { base: BASE });
  await h.addAdapter({ name: "a1" });
  await h.addAdapter({ name: "a2" });
  served = await serveApp(h.app, 0, "127.0.0.1");
  client = new OpenAI({ apiKey: h.keys.acme, baseURL: `${served.url}/v1`, maxRetries: 0 });
  otherClient = new OpenAI({ apiKey: h.keys.other, baseURL: `${served.url}/v1`, maxRetries: 0 });
});
afterAll(async () => {
  await served.close();
  await worker.stop();
  await h.close();
});

/** What the runners counted, as Prometheus would. */
const counted = { lines: [] as string[], ended: [] as string[] };
const metrics = quietMetrics({
  batchLine: (outcome) => void counted.lines.push(outcome),
  batchEnded: (status) => void counted.ended.push(status),
});

function runner(id = "runner-a", app: BatchRunnerOptions["app"] = h.app): BatchRunner {
  return new BatchRunner({
    app,
    db: h.db,
    log: h.deps.log,
    metrics,
    concurrency: 3,
    leaseMs: 60_000,
    newId: h.deps.newRequestId,
    runnerId: id,
    now: () => clock,
  });
}

/** Whether an attempt's usage is waived (true), billed (false) or not metered at all (undefined). */
async function waived(requestId: string): Promise<boolean | undefined> {
  const [row] = await h.db.select().from(usageEvents).where(eq(usageEvents.requestId, requestId));
  return row?.waived;
}

const chatLine = (customId: string, model: string, maxTokens = 4) =>
  JSON.stringify({
    custom_id: customId,
    method: "POST",
    url: "/v1/chat/completions",
    body: { model, messages: [{ role: "user", content: `Hello ${customId}` }], max_tokens: maxTokens },
  });

async function upload(lines: string[], oc = client) {
  return oc.files.create({
    file: await toFile(Buffer.from(`${lines.join("\n")}\n`), "in.jsonl"),
    purpose: "batch",
  });
}

/** An app whose requests never answer until cancelled: every line sent stays in flight. */
const stuck: BatchRunnerOptions["app"] = {
  fetch: (request) =>
    new Promise((resolve) => {
      request.signal.addEventListener("abort", () =>
        resolve(Response.json({ cancelled: true }, { status: 499 })),
      );
    }),
};

/** A runner whose lines never answer (each stays in flight until it stops), looking for work every 10 ms. */
function stuckRunner(runnerId: string, options: Partial<BatchRunnerOptions> = {}): BatchRunner {
  return new BatchRunner({
    app: stuck,
    db: h.db,
    log: h.deps.log,
    concurrency: 1,
    leaseMs: 60_000,
    pollMs: 10,
    newId: h.deps.newRequestId,
    runnerId,
    now: () => clock,
    ...options,
  });
}

/** A batch of the file's chat completion lines, started by `oc`'s org. */
function startBatch(
  fileId: string,
  extra: Partial<OpenAI.Batches.BatchCreateParams> = {},
  oc = client,
): Promise<OpenAI.Batches.Batch> {
  return oc.batches.create({
    input_file_id: fileId,
    endpoint: "/v1/chat/completions",
    completion_window: "24h",
    ...extra,
  });
}

/** A file's lines, parsed. */
async function linesOf(fileId: string): Promise<Record<string, unknown>[]> {
  const text = await (await client.files.content(fileId)).text();
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe("the Files API", () => {
  it("uploads, lists, reads back and deletes a file of the caller's org only", async () => {
    const file = await upload([chatLine("x", BASE)]);
    expect(file).toMatchObject({
      object: "file",
      purpose: "batch",
      filename: "in.jsonl",
      status: "processed",
    });
    expect(file.id).toMatch(/^file-/);
    expect(file.bytes).toBe(Buffer.byteLength(`${chatLine("x", BASE)}\n`));
    expect((await client.files.retrieve(file.id)).id).toBe(file.id);
    expect(await (await client.files.content(file.id)).text()).toBe(`${chatLine("x", BASE)}\n`);
    const listed = await client.files.list({ purpose: "batch" });
    expect(listed.data.map((f) => f.id)).toContain(file.id);
    await expect(otherClient.files.retrieve(file.id)).rejects.toMatchObject({
      status: 404,
      code: "file_not_found",
    });
    expect((await otherClient.files.list()).data.map((f) => f.id)).not.toContain(file.id);
    expect(await client.files.delete(file.id)).toEqual({ id: file.id, object: "file", deleted: true });
    await expect(client.files.retrieve(file.id)).rejects.toMatchObject({ status: 404 });
  });

  it("keeps a file 30 days or for its expires_after, then answers 404 for it, and a sweep deletes it", async () => {
    let now = Date.now();
    const clock = () => now;
    const app = h.appWith({ now: clock, fileExpiry: new DueSweep(sweepFiles, clock) });
    const c = new OpenAI({
      apiKey: h.keys.acme,
      baseURL: "http://gateway/v1",
      maxRetries: 0,
      fetch: async (url, init) => app.request(String(url), init),
    });
    const create = async (expires_after?: OpenAI.FileCreateParams["expires_after"]) =>
      c.files.create({
        file: await toFile(Buffer.from(`${chatLine("e", BASE)}\n`), "e.jsonl"),
        purpose: "batch",
        ...(expires_after ? { expires_after } : {}),
      });
    const month = await create();
    expect(month.expires_at! - month.created_at).toBe(30 * 24 * 3600);
    const hour = await create({ anchor: "created_at", seconds: 3600 });
    expect(hour.expires_at! - hour.created_at).toBe(3600);
    const before = (await c.files.list({ limit: 100 })).data.length;
    await expect(create({ anchor: "created_at", seconds: 60 })).rejects.toMatchObject({
      status: 400,
      param: "expires_after.seconds",
    });
    await expect(create({ anchor: "last_active_at" as "created_at", seconds: 3600 })).rejects.toMatchObject({
      status: 400,
      param: "expires_after.anchor",
    });
    // A negative or fractional number is refused for its value, not as "a string".
    for (const seconds of [-1, 3600.5]) {
      await expect(create({ anchor: "created_at", seconds })).rejects.toMatchObject({
        status: 400,
        param: "expires_after.seconds",
        message: expect.not.stringContaining("string"),
      });
    }
    expect((await c.files.list({ limit: 100 })).data).toHaveLength(before);

    now += 3600_000 + 1000;
    // Gone from the API at once; the row stays until this process's next sweep is due.
    const gone = { status: 404, code: "file_not_found" };
    await expect(c.files.retrieve(hour.id)).rejects.toMatchObject(gone);
    await expect(c.files.content(hour.id)).rejects.toMatchObject(gone);
    await expect(c.files.delete(hour.id)).rejects.toMatchObject(gone);
    await expect(startBatch(hour.id, {}, c)).rejects.toMatchObject(gone);
    expect((await c.files.list({ limit: 100 })).data.map((f) => f.id)).not.toContain(hour.id);
    expect((await c.files.retrieve(month.id)).id).toBe(month.id);
    const rowsOf = (id: string) => h.db.select({ id: files.id }).from(files).where(eq(files.id, id));
    expect(await rowsOf(hour.id)).toHaveLength(1);
    // The first upload swept (nothing) an hour and a second ago: the next upload's sweep is due.
    await create();
    expect(await rowsOf(hour.id)).toHaveLength(0);
    expect(await rowsOf(month.id)).toHaveLength(1);
  });

  it("pages the list newest first, as the SDK's pager follows it", async () => {
    const uploaded = [];
    for (const name of ["p1", "p2", "p3"])
      uploaded.push((await upload([chatLine(name, BASE)], otherClient)).id);
    const first = await otherClient.files.list({ limit: 2 });
    expect(first.data.map((f) => f.id)).toEqual([uploaded[2], uploaded[1]]);
    expect(first.has_more).toBe(true);
    const next = await first.getNextPage();
    expect(next.data.map((f) => f.id)).toContain(uploaded[0]);
    expect(next.data.map((f) => f.id)).not.toContain(uploaded[1]);
    await expect(otherClient.files.list({ after: "file-unknown" })).rejects.toMatchObject({
      status: 400,
      param: "after",
    });
  });

  it("refuses an upload that would take the org's files past their storage, counting the files of that org only, one upload at a time", async () => {
    const room = 250;
    /** What the org's files not yet expired hold. */
    const used = async (orgId: string) =>
      (await h.db.select().from(files).where(eq(files.orgId, orgId)))
        .filter((f) => f.expiresAt === null || f.expiresAt.getTime() > Date.now())
        .reduce((sum, f) => sum + f.bytes, 0);
    const over = (orgId: string) => used(orgId).then((bytes) => bytes + room);
    const acmeLimit = await over("acme");
    const clientWithin = (key: string, maxOrgFileBytes: number) => {
      const app = h.appWith({ limits: { maxFileBytes: 4096, maxOrgFileBytes } });
      return new OpenAI({
        apiKey: key,
        baseURL: "http://gateway/v1",
        maxRetries: 0,
        fetch: async (url, init) => app.request(String(url), init),
      });
    };
    const acme = clientWithin(h.keys.acme, acmeLimit);
    const hundred = async (c: OpenAI, name: string) =>
      c.files.create({ file: await toFile(Buffer.alloc(100, 0x61), name), purpose: "batch" });
    const first = await hundred(acme, "first.jsonl");
    await hundred(acme, "second.jsonl");
    const refused = await hundred(acme, "third.jsonl").catch((error: unknown) => error);
    expect(refused).toMatchObject({ status: 400, code: "file_storage_limit_exceeded", param: "file" });
    expect((refused as Error).message).toContain(`may hold ${acmeLimit}`);
    expect((await acme.files.list({ limit: 100 })).data.map((f) => f.filename)).not.toContain("third.jsonl");
    // Another org's files are its own: the same limit leaves it its own room.
    const other = clientWithin(h.keys.other, await over("other"));
    await hundred(other, "theirs.jsonl");
    // A deleted file frees its room; two uploads at once into room for one: exactly one goes in.
    await acme.files.delete(first.id);
    const both = await Promise.allSettled([hundred(acme, "racing-a.jsonl"), hundred(acme, "racing-b.jsonl")]);
    expect(both.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
    expect(await used("acme")).toBeLessThanOrEqual(acmeLimit);
    // The org's own limit, set by the operator, replaces the gateway's.
    const roomy = clientWithin(h.keys.acme, Number.MAX_SAFE_INTEGER);
    await setStorageLimits(h.db, "acme", { files: await used("acme") });
    try {
      await expect(hundred(roomy, "own-limit.jsonl")).rejects.toMatchObject({
        status: 400,
        code: "file_storage_limit_exceeded",
      });
    } finally {
      await setStorageLimits(h.db, "acme", { files: null });
    }
    await hundred(roomy, "own-limit.jsonl");
  });

  it("refuses another purpose, a file past the limit and a file that is not text or holds a NUL byte", async () => {
    await expect(
      client.files.create({ file: await toFile(Buffer.from("{}\n"), "a.jsonl"), purpose: "fine-tune" }),
    ).rejects.toMatchObject({ status: 400, param: "purpose" });
    await expect(
      client.files.create({ file: await toFile(Buffer.alloc(5000, 0x61), "big.jsonl"), purpose: "batch" }),
    ).rejects.toMatchObject({ status: 413 });
    await expect(
      client.files.create({
        file: await toFile(Buffer.from([0xff, 0xfe, 0x00]), "b.jsonl"),
        purpose: "batch",
      }),
    ).rejects.toMatchObject({ status: 400, param: "file" });
    // A NUL byte is UTF-8 but never JSONL (a JSON string writes it \u0000), and Postgres text cannot hold it.
    await expect(
      client.files.create({ file: await toFile(Buffer.from('{"a":"\0"}\n'), "nul.jsonl"), purpose: "batch" }),
    ).rejects.toMatchObject({ status: 400, param: "file", message: expect.stringContaining("NUL") });
    expect((await client.files.list()).data.map((f) => f.filename)).not.toContain("nul.jsonl");
    // A multipart body that cannot be read: a 400 in OpenAI's shape.
    const raw = (path: string, init: RequestInit = {}) =>
      fetch(`${served.url}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${h.keys.acme}`, ...(init.headers as Record<string, string>) },
      });
    const broken = await raw("/v1/files", {
      method: "POST",
      headers: { "content-type": "multipart/form-data; boundary=nope" },
      body: "--other\r\nnot a part",
    });
    expect(broken.status).toBe(400);
    expect(await broken.json()).toMatchObject({ error: { type: "invalid_request_error" } });
  });
});

describe("the Batch API", () => {
  it("runs every line as its request, mixed adapters together, and writes the answers back in input order", async () => {
    const file = await upload([
      chatLine("first", `${BASE}:acme/a1`, 3),
      chatLine("second", `${BASE}:acme/a2`, 5),
      chatLine("bad-model", `${BASE}:acme/missing`),
      chatLine("fourth", BASE, 2),
    ]);
    const batch = await startBatch(file.id, { metadata: { job: "nightly" } });
    expect(batch).toMatchObject({
      object: "batch",
      status: "in_progress",
      request_counts: { total: 4, completed: 0, failed: 0 },
      metadata: { job: "nightly" },
      output_file_id: null,
    });
    expect(batch.expires_at! - batch.created_at).toBe(24 * 3600);
    counted.lines.length = 0;
    counted.ended.length = 0;
    await runner().drain();
    expect(counted.lines.sort()).toEqual(["answered", "answered", "answered", "failed"]);
    expect(counted.ended).toEqual(["completed"]);

    const done = await client.batches.retrieve(batch.id);
    expect(done.status).toBe("completed");
    expect(done.request_counts).toEqual({ total: 4, completed: 3, failed: 1 });
    expect(done.completed_at).not.toBeNull();
    const outputs = await linesOf(done.output_file_id!);
    expect(outputs.map((l) => l.custom_id)).toEqual(["first", "second", "fourth"]);
    const [first, second] = outputs as {
      response: { status_code: number; request_id: string; body: OpenAI.ChatCompletion };
    }[];
    expect(first!.response.status_code).toBe(200);
    expect(first!.response.body.choices[0]?.message.content).toBe(fakeReplyText(3));
    expect(second!.response.body.choices[0]?.message.content).toBe(fakeReplyText(5));
    // Each line reached the worker as its own request on its own adapter, billed under its request id.
    const sent = worker.received.find((r) => r.id === first!.response.request_id);
    expect(sent?.adapter?.name).toBe("acme/a1");
    // Marked as a batch line, so its usage is billed at the batch price; a live request is not.
    expect(sent?.batch).toBe(true);
    const live = await client.chat.completions.create({
      model: BASE,
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 1,
    });
    expect(worker.received.find((r) => r.id === live.id.replace(/^chatcmpl-/, ""))?.batch).toBeUndefined();
    expect(worker.received.find((r) => r.id === second!.response.request_id)?.adapter?.name).toBe("acme/a2");
    const errors = await linesOf(done.error_file_id!);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({
      custom_id: "bad-model",
      response: { status_code: 404, body: { error: { code: "model_not_found" } } },
    });
    // The output file is the org's, kept 30 days as the batch asked nothing else, and the batch is listed.
    const output = await client.files.retrieve(done.output_file_id!);
    expect(output.purpose).toBe("batch_output");
    expect(output.expires_at! - output.created_at).toBe(30 * 24 * 3600);
    expect((await client.batches.list()).data.map((b) => b.id)).toContain(batch.id);
    await expect(otherClient.batches.retrieve(batch.id)).rejects.toMatchObject({ status: 404 });
    await expect(otherClient.files.content(done.output_file_id!)).rejects.toMatchObject({ status: 404 });
  });

  it("keeps a line's body as written: a JSON schema's properties reach the worker in their order", async () => {
    const schema = {
      type: "object",
      properties: { zeta: { type: "string" }, a: { type: "integer" }, middle: { type: "boolean" } },
      required: ["zeta", "a", "middle"],
      additionalProperties: false,
    };
    const line = JSON.stringify({
      custom_id: "ordered",
      method: "POST",
      url: "/v1/chat/completions",
      body: {
        model: BASE,
        messages: [{ role: "user", content: "ordered" }],
        max_tokens: 3,
        response_format: { type: "json_schema", json_schema: { name: "o", strict: true, schema } },
      },
    });
    const file = await client.files.create({
      file: await toFile(Buffer.from(`${line}\n`), "o.jsonl"),
      purpose: "batch",
    });
    const batch = await startBatch(file.id);
    await runner().drain();
    const ended = await client.batches.retrieve(batch.id);
    const [answer] = await linesOf(ended.output_file_id!);
    const requestId = (answer as { response: { request_id: string } }).response.request_id;
    const sent = worker.received.find((r) => r.id === requestId);
    const format = sent?.sampling.response_format as { json_schema: { properties: object } } | undefined;
    // jsonb would have stored them as a, zeta, middle (shortest key first).
    expect(Object.keys(format!.json_schema.properties)).toEqual(["zeta", "a", "middle"]);
  });

  it("keeps its output and error files for output_expires_after", async () => {
    const file = await upload([chatLine("ok", BASE), chatLine("bad", `${BASE}:acme/missing`)]);
    const batch = await startBatch(file.id, {
      output_expires_after: { anchor: "created_at", seconds: 7200 },
    });
    await runner().drain();
    const done = await client.batches.retrieve(batch.id);
    for (const id of [done.output_file_id!, done.error_file_id!]) {
      const written = await client.files.retrieve(id);
      expect(written.expires_at! - written.created_at).toBe(7200);
    }
    await expect(
      startBatch(file.id, { output_expires_after: { anchor: "created_at", seconds: 40 * 24 * 3600 } }),
    ).rejects.toMatchObject({ status: 400, param: "output_expires_after.seconds" });
  });

  it("refuses an input file with a bad line whole, naming the line, and starts nothing", async () => {
    const before = (await client.batches.list()).data.length;
    for (const [lines, message] of [
      [[chatLine("a", BASE), "not json"], "Line 2 of the input file: not valid JSON."],
      [
        [chatLine("a", BASE), chatLine("a", BASE)],
        'Line 2 of the input file: custom_id "a" is used by an earlier line.',
      ],
      [
        [chatLine("a", BASE).replace("/v1/chat/completions", "/v1/completions")],
        "is not the batch's endpoint",
      ],
      [
        [chatLine("a", BASE).replace('"max_tokens":4', '"max_tokens":4,"stream":true')],
        "body.stream cannot be true",
      ],
      [
        [JSON.stringify({ custom_id: "a", method: "GET", url: "/v1/chat/completions", body: {} })],
        "Line 1 of the input file: method",
      ],
      [[chatLine("a\u0000", BASE)], "Line 1 of the input file: custom_id must not hold a NUL character"],
    ] as const) {
      const file = await upload([...lines]);
      await expect(startBatch(file.id)).rejects.toMatchObject({
        status: 400,
        param: "input_file_id",
        message: expect.stringContaining(message),
      });
    }
    // A background response would run outside the batch, at the live price, its answer not in the batch's files.
    const background = await upload([
      JSON.stringify({
        custom_id: "bg",
        method: "POST",
        url: "/v1/responses",
        body: { model: BASE, input: "x", background: true },
      }),
    ]);
    await expect(startBatch(background.id, { endpoint: "/v1/responses" })).rejects.toMatchObject({
      status: 400,
      message: expect.stringContaining("Line 1 of the input file: body.background cannot be true"),
    });
    await expect(startBatch("file-nope")).rejects.toMatchObject({ status: 404, code: "file_not_found" });
    const theirs = await upload([chatLine("a", BASE)], otherClient);
    await expect(startBatch(theirs.id)).rejects.toMatchObject({ status: 404 });
    expect((await client.batches.list()).data.length).toBe(before);
  });

  it("cancels: lines not started never run, and every line is in one of the two files", async () => {
    const file = await upload([chatLine("c1", BASE), chatLine("c2", BASE)]);
    const batch = await startBatch(file.id);
    const received = worker.received.length;
    expect((await client.batches.cancel(batch.id)).status).toBe("cancelling");
    await runner().drain();
    const ended = await client.batches.retrieve(batch.id);
    expect(ended.status).toBe("cancelled");
    expect(ended.cancelled_at).not.toBeNull();
    expect(ended.output_file_id).toBeNull();
    expect(ended.request_counts).toEqual({ total: 2, completed: 0, failed: 2 });
    expect((await linesOf(ended.error_file_id!)).map((l) => (l.error as { code: string }).code)).toEqual([
      "batch_cancelled",
      "batch_cancelled",
    ]);
    expect(worker.received.length).toBe(received);
    await expect(client.batches.cancel(batch.id)).rejects.toMatchObject({ status: 409 });
  });

  it("expires the lines a batch did not run within its 24 hours", async () => {
    const file = await upload([chatLine("late", BASE)]);
    const batch = await startBatch(file.id);
    clock += 25 * 3600_000;
    try {
      await runner().drain();
    } finally {
      clock -= 25 * 3600_000;
    }
    const ended = await client.batches.retrieve(batch.id);
    expect(ended.status).toBe("expired");
    expect(await linesOf(ended.error_file_id!)).toMatchObject([
      { custom_id: "late", response: null, error: { code: "batch_expired" } },
    ]);
  });

  it("takes again a line left running by a runner that died, once its lease is over", async () => {
    const file = await upload([chatLine("orphan", BASE, 2)]);
    const batch = await startBatch(file.id);
    await h.db
      .update(batchRequests)
      .set({ status: "running", claimedBy: "dead-runner", claimedAt: new Date(clock) })
      .where(eq(batchRequests.batchId, batch.id));
    // Within the lease the line is the dead runner's: nothing runs.
    await runner("runner-b").drain();
    expect((await client.batches.retrieve(batch.id)).status).toBe("in_progress");
    clock += 61_000;
    await runner("runner-b").drain();
    const ended = await client.batches.retrieve(batch.id);
    expect(ended.status).toBe("completed");
    const [line] = await linesOf(ended.output_file_id!);
    expect(line).toMatchObject({ custom_id: "orphan", response: { status_code: 200 } });
  });

  it("runs a line taken again after its runner died as a new attempt, waiving the dead runner's, so the line is billed for the answer", async () => {
    const file = await upload([chatLine("dies", BASE, 2)]);
    const batch = await startBatch(file.id);
    // Runner A sends the line and the worker answers it, but A dies before it stores the answer.
    const received = worker.received.length;
    const dying: BatchRunnerOptions["app"] = {
      fetch: async (request, env) => {
        await h.app.fetch(request, env);
        return new Promise<Response>((_, reject) =>
          request.signal.addEventListener("abort", () => reject(new Error("the runner died"))),
        );
      },
    };
    const a = runner("runner-a", dying);
    a.start();
    while (worker.received.length === received) await new Promise((r) => setTimeout(r, 5));
    await a.stop(0);
    expect((await client.batches.retrieve(batch.id)).status).toBe("in_progress");
    clock += 61_000;
    await runner("runner-b").drain();
    const ended = await client.batches.retrieve(batch.id);
    expect(ended.request_counts).toEqual({ total: 1, completed: 1, failed: 0 });
    const [first, again] = worker.received.slice(received);
    expect(again!.id).not.toBe(first!.id);
    const [line] = (await linesOf(ended.output_file_id!)) as { response: { request_id: string } }[];
    expect(line!.response.request_id).toBe(again!.id);
    expect(await waived(first!.id)).toBe(true);
    // Not waived (the scripted worker meters nothing, so it has no row at all).
    expect(await waived(again!.id)).not.toBe(true);
  });

  it("fails the lines of a batch whose key was revoked, without running them", async () => {
    const created = await createApiKey(h.db, { orgId: "acme", name: "short-lived" });
    const shortLived = new OpenAI({ apiKey: created.key, baseURL: `${served.url}/v1`, maxRetries: 0 });
    const file = await upload([chatLine("r1", BASE)], shortLived);
    const batch = await startBatch(file.id, {}, shortLived);
    await h.db.update(apiKeys).set({ revokedAt: new Date() }).where(eq(apiKeys.id, created.record.id));
    await runner().drain();
    const ended = await client.batches.retrieve(batch.id);
    expect(ended.request_counts).toEqual({ total: 1, completed: 0, failed: 1 });
    expect(await linesOf(ended.error_file_id!)).toMatchObject([
      { custom_id: "r1", response: { status_code: 401, body: { error: { code: "invalid_api_key" } } } },
    ]);
  });

  it("fails, without retrying, a line larger than its key's whole tokens per minute, and runs the others", async () => {
    const created = await createApiKey(h.db, { orgId: "acme", name: "small-tpm" });
    await h.db.update(apiKeys).set({ tokensPerMinute: 40 }).where(eq(apiKeys.id, created.record.id));
    const limited = new OpenAI({ apiKey: created.key, baseURL: `${served.url}/v1`, maxRetries: 0 });
    const file = await upload([chatLine("huge", BASE, 50), chatLine("small", BASE, 2)], limited);
    const batch = await startBatch(file.id, {}, limited);
    counted.lines.length = 0;
    await runner().drain();
    const ended = await client.batches.retrieve(batch.id);
    expect(ended.status).toBe("completed");
    expect(ended.request_counts).toEqual({ total: 2, completed: 1, failed: 1 });
    expect(counted.lines).not.toContain("retried");
    expect(await linesOf(ended.error_file_id!)).toMatchObject([
      { custom_id: "huge", response: { status_code: 429, body: { error: { code: "rate_limit_exceeded" } } } },
    ]);
  });

  it("puts a line back after a transient refusal and runs it once its delay is over", async () => {
    const file = await upload([chatLine("retry", BASE, 2)]);
    const batch = await startBatch(file.id);
    let refusals = 1;
    const ids: string[] = [];
    const flaky: BatchRunnerOptions["app"] = {
      fetch: (request, env) =>
        ids.push((env as RunEnv)[REQUEST_ID]!) && refusals-- > 0
          ? Response.json(
              { error: { message: "no worker", type: "server_error", code: "no_worker" } },
              { status: 503 },
            )
          : h.app.fetch(request, env),
    };
    counted.lines.length = 0;
    await runner("runner-c", flaky).drain();
    expect(counted.lines).toEqual(["retried"]);
    expect((await client.batches.retrieve(batch.id)).status).toBe("in_progress");
    clock += 1_500;
    await runner("runner-c", flaky).drain();
    const ended = await client.batches.retrieve(batch.id);
    expect(ended.status).toBe("completed");
    expect(ended.request_counts).toEqual({ total: 1, completed: 1, failed: 0 });
    // A new attempt, so a new request id; the refused one is waived, as one that ran in part would be.
    expect(ids).toHaveLength(2);
    expect(ids[1]).not.toBe(ids[0]);
    expect(await waived(ids[0]!)).toBe(true);
    expect(await waived(ids[1]!)).not.toBe(true);
  });

  it("hands back, on stop, the lines still running after the grace, and another runner runs them", async () => {
    const file = await upload([chatLine("slow", BASE, 2)]);
    const batch = await startBatch(file.id);
    const sent: string[] = [];
    const leaving = stuckRunner("leaving", {
      app: {
        fetch: (request, env) => {
          sent.push((env as RunEnv)[REQUEST_ID]!);
          return stuck.fetch(request, env);
        },
      },
    });
    leaving.start();
    const claimed = async () =>
      (await h.db.select().from(batchRequests).where(eq(batchRequests.batchId, batch.id)))[0]!;
    for (let i = 0; i < 200 && (await claimed()).status !== "running"; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect((await claimed()).claimedBy).toBe("leaving");
    await leaving.stop(50);
    expect(await claimed()).toMatchObject({ status: "pending", claimedBy: null, statusCode: null });
    // The attempt the stop cut is waived: the line is billed for the run that answers.
    expect(sent).toHaveLength(1);
    expect(await waived(sent[0]!)).toBe(true);
    await runner("runner-d").drain();
    const ended = await client.batches.retrieve(batch.id);
    expect(ended.status).toBe("completed");
    expect(ended.request_counts).toEqual({ total: 1, completed: 1, failed: 0 });
  });

  it("sends, after stop's grace, no line it claimed before stopping: the line goes back and stop returns", async () => {
    const file = await upload([chatLine("late", BASE, 2)]);
    const batch = await startBatch(file.id);
    // Held between claiming the line and sending it: reading the key the line runs as.
    const keys = heldReads(h.db, apiKeys);
    const stopping = stuckRunner("stopping", { db: keys.db });
    stopping.start();
    await keys.reached;
    const stopped = stopping.stop(0);
    // Its grace over, the runner cancels what it sent (nothing yet), then the line reads its key.
    await new Promise((resolve) => setTimeout(resolve, 100));
    keys.release();
    const within = await Promise.race([
      stopped.then(() => "stopped"),
      new Promise((resolve) => setTimeout(resolve, 5_000, "still waiting on a line it sent after the grace")),
    ]);
    expect(within).toBe("stopped");
    const [left] = await h.db.select().from(batchRequests).where(eq(batchRequests.batchId, batch.id));
    expect(left).toMatchObject({ status: "pending", claimedBy: null, attempts: 1 });
    await runner("runner-after-stop").drain();
    expect((await client.batches.retrieve(batch.id)).request_counts).toEqual({
      total: 1,
      completed: 1,
      failed: 0,
    });
  });

  it("sends a base's lines only into the room its workers report, whichever runner sends them, and one at a time where none is live", async () => {
    const file = await upload([
      ...["w1", "w2", "w3", "w4"].map((id) => chatLine(id, BASE)),
      ...["c1", "c2"].map((id) => chatLine(id, "cold-base:acme/a1")),
    ]);
    const batch = await startBatch(file.id);
    let passes = 0;
    // Two gateways' runners, each with places to spare: the room is the fleet's, not each runner's.
    const filling = ["filling-a", "filling-b"].map((runnerId) =>
      stuckRunner(runnerId, {
        concurrency: 6,
        // The base's workers have room for two lines (a heartbeat older than anything sent); cold-base
        // has no live worker.
        room: async () => {
          passes++;
          return new Map([[BASE, { places: 2, asOf: 0 }]]);
        },
      }),
    );
    for (const runner of filling) runner.start();
    try {
      // Each pass asks for the room; ten passes between them, and every line that may go has gone.
      for (const deadline = Date.now() + 20_000; passes < 10; ) {
        if (Date.now() > deadline) {
          const lines = await h.db
            .select({
              batchId: batchRequests.batchId,
              status: batchRequests.status,
              by: batchRequests.claimedBy,
            })
            .from(batchRequests)
            .where(eq(batchRequests.status, "running"));
          throw new Error(`the runners made ${passes} passes in 20 s; running: ${JSON.stringify(lines)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const running = await h.db
        .select({ customId: batchRequests.customId })
        .from(batchRequests)
        .where(and(eq(batchRequests.batchId, batch.id), eq(batchRequests.status, "running")));
      const sent = running.map((r) => r.customId[0]).sort();
      expect(sent).toEqual(["c", "w", "w"]);
    } finally {
      await Promise.all(filling.map((runner) => runner.stop(0)));
    }
    await client.batches.cancel(batch.id);
    await runner().drain();
    expect((await client.batches.retrieve(batch.id)).status).toBe("cancelled");
  });

  it("takes turns across orgs, background responses first: a later, smaller batch of another org does not wait for an earlier one to end", async () => {
    const big = await startBatch((await upload(["b0", "b1", "b2", "b3"].map((id) => chatLine(id, BASE)))).id);
    const small = await startBatch(
      (
        await upload(
          ["s0", "s1"].map((id) => chatLine(id, BASE)),
          otherClient,
        )
      ).id,
      {},
      otherClient,
    );
    await otherClient.responses.create({
      model: BASE,
      input: "later",
      max_output_tokens: 2,
      background: true,
    });
    // One place, so lines run one at a time in the order they are taken.
    const order: string[] = [];
    const recording: BatchRunnerOptions["app"] = {
      fetch: async (request, env) => {
        // A chat line's first message, or a background response's first input item (stored as items).
        const body = (await request.clone().json()) as {
          input?: { content: string }[];
          messages?: { content: string }[];
        };
        order.push((body.input ?? body.messages)![0]!.content.replace("Hello ", ""));
        return h.app.fetch(request, env);
      },
    };
    const oneAtATime = new BatchRunner({
      app: recording,
      db: h.db,
      log: h.deps.log,
      concurrency: 1,
      leaseMs: 60_000,
      newId: h.deps.newRequestId,
      runnerId: "one-at-a-time",
      now: () => clock,
    });
    await oneAtATime.drain();
    expect(order).toEqual(["later", "b0", "s0", "b1", "s1", "b2", "b3"]);
    for (const batch of [big, small]) {
      expect(
        (await client.batches.retrieve(batch.id).catch(() => otherClient.batches.retrieve(batch.id))).status,
      ).toBe("completed");
    }
  });
});

describe("turns when bases are full", () => {
  it("moves on to the orgs behind those whose lines all wait for a full base", async () => {
    // Five orgs whose batches came first wait on a base with no room; a sixth, later, on a base with room.
    const clientOf = async (org: string) => {
      await ensureOrg(h.db, org);
      const { key } = await createApiKey(h.db, { orgId: org, name: "turns" });
      return new OpenAI({ apiKey: key, baseURL: `${served.url}/v1`, maxRetries: 0 });
    };
    const started: { oc: OpenAI; id: string }[] = [];
    for (const [org, model] of [
      ...["w1", "w2", "w3", "w4", "w5"].map((org) => [org, "full-base"] as const),
      ["roomy", BASE] as const,
    ]) {
      const oc = await clientOf(org);
      const file = await upload([chatLine(`${org}-0`, model), chatLine(`${org}-1`, model)], oc);
      started.push({ oc, id: (await startBatch(file.id, {}, oc)).id });
    }
    const oneAtATime = stuckRunner("full-bases", {
      room: async () =>
        new Map([
          ["full-base", { places: 0, asOf: 0 }],
          [BASE, { places: 2, asOf: 0 }],
        ]),
    });
    const running = async () =>
      (
        await h.db
          .select({ customId: batchRequests.customId })
          .from(batchRequests)
          .where(and(eq(batchRequests.status, "running"), eq(batchRequests.claimedBy, "full-bases")))
      ).map((r) => r.customId);
    oneAtATime.start();
    try {
      // Four orgs looked at a pass (its one place × 4): the sixth is reached on the second pass.
      for (const deadline = Date.now() + 20_000; (await running()).length === 0; ) {
        expect(Date.now(), "the org with room waited behind the full base").toBeLessThan(deadline);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(await running()).toEqual(["roomy-0"]);
    } finally {
      await oneAtATime.stop(0);
    }
    for (const { oc, id } of started) await oc.batches.cancel(id);
    await runner().drain();
  });
});

describe("background responses", () => {
  it("answers queued at once, and the runner runs it into the same response", async () => {
    const batchesBefore = (await client.batches.list()).data.length;
    const queued = await client.responses.create({
      model: `${BASE}:acme/a1`,
      input: "Write later",
      max_output_tokens: 4,
      background: true,
    });
    expect(queued).toMatchObject({ status: "queued", background: true, output: [] });
    expect((await client.responses.retrieve(queued.id)).status).toBe("queued");
    // Not one of the org's batches.
    expect((await client.batches.list()).data.length).toBe(batchesBefore);
    await runner().drain();
    const done = await client.responses.retrieve(queued.id);
    expect(done).toMatchObject({
      id: queued.id,
      status: "incomplete",
      background: true,
      created_at: queued.created_at,
    });
    expect(done.output_text).toBe(fakeReplyText(4));
    expect(done.usage?.output_tokens).toBe(4);
    // A background response is billed as a live request, not as a batch line.
    const [run] = worker.received
      .filter((r) => r.adapter?.name === "acme/a1" && r.sampling.max_tokens === 4)
      .slice(-1);
    expect(run?.batch).toBeUndefined();
    // It continues like any stored response.
    const next = await client.responses.create({
      model: BASE,
      previous_response_id: done.id,
      input: "More",
      max_output_tokens: 2,
    });
    expect(next.status).toBe("incomplete");
    expect((await client.responses.inputItems.list(next.id)).data.length).toBeGreaterThanOrEqual(3);
  });

  it("runs one left running by a runner that died again, waiving the dead run's usage", async () => {
    const queued = await client.responses.create({
      model: BASE,
      input: "Write later, after a crash",
      max_output_tokens: 3,
      background: true,
    });
    const waivedRows = async () =>
      (
        await h.db
          .select()
          .from(usageEvents)
          .where(and(eq(usageEvents.orgId, "acme"), eq(usageEvents.waived, true)))
      ).length;
    const before = await waivedRows();
    // Its runner claimed it and died before any output was logged.
    await h.db
      .update(batchRequests)
      .set({ status: "running", claimedBy: "dead-runner", claimedAt: new Date(clock) })
      .where(eq(batchRequests.customId, queued.id.replace(/^resp_/, "")));
    clock += 61_000;
    await runner("runner-after-crash").drain();
    expect((await client.responses.retrieve(queued.id)).status).toBe("incomplete");
    expect(await waivedRows()).toBe(before + 1);
  });

  it("runs one in a conversation from the conversation as it is then, and adds its turn when it ends", async () => {
    const conversation = await client.conversations.create({
      items: [{ type: "message", role: "user", content: "Earlier" }],
    });
    const queued = await client.responses.create({
      model: BASE,
      conversation: conversation.id,
      input: "Later",
      max_output_tokens: 2,
      background: true,
    });
    expect(queued.conversation).toEqual({ id: conversation.id });
    // Nothing is added while it waits.
    expect((await client.conversations.items.list(conversation.id)).data).toHaveLength(1);
    await runner().drain();
    const done = await client.responses.retrieve(queued.id);
    expect(done.output_text).toBe(fakeReplyText(2));
    const items = await client.conversations.items.list(conversation.id, { order: "asc" });
    expect(items.data.map((item) => (item.type === "message" ? item.role : item.type))).toEqual([
      "user",
      "user",
      "assistant",
    ]);
    expect(items.data[2]).toMatchObject({ id: done.output[0]!.id });
  });

  it("cancels or deletes a queued one, which then never runs, and refuses to cancel a response not made in the background", async () => {
    const received = worker.received.length;
    const queued = await client.responses.create({
      model: BASE,
      input: "never",
      max_output_tokens: 3,
      background: true,
    });
    const cancelled = await client.responses.cancel(queued.id);
    expect(cancelled.status).toBe("cancelled");
    await runner().drain();
    expect((await client.responses.retrieve(queued.id)).status).toBe("cancelled");
    expect(worker.received.length).toBe(received);
    // Cancelling again answers it as it is.
    expect((await client.responses.cancel(queued.id)).status).toBe("cancelled");
    // Deleted before it ran, one never runs, and does not come back.
    const deleted = await client.responses.create({
      model: BASE,
      input: "gone",
      max_output_tokens: 3,
      background: true,
    });
    await client.responses.delete(deleted.id);
    await runner().drain();
    await expect(client.responses.retrieve(deleted.id)).rejects.toMatchObject({ status: 404 });
    expect(worker.received.length).toBe(received);
    const live = await client.responses.create({ model: BASE, input: "now", max_output_tokens: 1 });
    await expect(client.responses.cancel(live.id)).rejects.toMatchObject({
      status: 400,
      param: "response_id",
    });
    await expect(otherClient.responses.cancel(queued.id)).rejects.toMatchObject({ status: 404 });
  });

  it("keeps a response cancelled while it ran cancelled, dropping its run's answer, which its conversation does not get either", async () => {
    const { app: slow, release } = heldApp(h.app);
    const conversation = await client.conversations.create({
      items: [{ type: "message", role: "user", content: "Before" }],
    });
    const queued = await client.responses.create({
      model: BASE,
      conversation: conversation.id,
      input: "slow",
      max_output_tokens: 2,
      background: true,
    });
    const draining = runner("runner-e", slow).drain();
    for (let i = 0; i < 200 && (await client.responses.retrieve(queued.id)).status !== "in_progress"; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect((await client.responses.retrieve(queued.id)).status).toBe("in_progress");
    expect((await client.responses.cancel(queued.id)).status).toBe("cancelled");
    release();
    await draining;
    const after = await client.responses.retrieve(queued.id);
    expect(after.status).toBe("cancelled");
    expect(after.output).toEqual([]);
    expect((await client.conversations.items.list(conversation.id)).data).toHaveLength(1);
  });

  it("stores the items a queued one in a conversation ran on, those added while it waited too", async () => {
    const conversation = await client.conversations.create({
      items: [{ type: "message", role: "user", content: "First" }],
    });
    const queued = await client.responses.create({
      model: BASE,
      conversation: conversation.id,
      input: "Late",
      max_output_tokens: 2,
      background: true,
    });
    await client.conversations.items.create(conversation.id, {
      items: [{ type: "message", role: "user", content: "Added while it waited" }],
    });
    await runner().drain();
    const items = await client.responses.inputItems.list(queued.id, { order: "asc" });
    expect(items.data.map((item) => (item.type === "message" ? item.content[0] : null))).toMatchObject([
      { text: "First" },
      { text: "Added while it waited" },
      { text: "Late" },
    ]);
  });

  it("refuses to continue one that has not ended, and continues it once it has", async () => {
    const queued = await client.responses.create({
      model: BASE,
      input: "First",
      max_output_tokens: 2,
      background: true,
    });
    const received = worker.received.length;
    await expect(
      client.responses.create({ model: BASE, previous_response_id: queued.id, input: "Next" }),
    ).rejects.toMatchObject({ status: 400, param: "previous_response_id", code: "response_not_ended" });
    await expect(
      client.responses.inputTokens.count({ model: BASE, previous_response_id: queued.id, input: "Next" }),
    ).rejects.toMatchObject({ status: 400, code: "response_not_ended" });
    expect(worker.received.length).toBe(received);
    await runner().drain();
    const next = await client.responses.create({
      model: BASE,
      previous_response_id: queued.id,
      input: "Next",
      max_output_tokens: 1,
    });
    const items = await client.responses.inputItems.list(next.id, { order: "asc" });
    expect(items.data.map((item) => item.type === "message" && item.role)).toEqual([
      "user",
      "assistant",
      "user",
    ]);
  });

  it("marks failed, with the reason, a background response whose run cannot answer", async () => {
    const created = await createApiKey(h.db, { orgId: "acme", name: "background-short" });
    const shortLived = new OpenAI({ apiKey: created.key, baseURL: `${served.url}/v1`, maxRetries: 0 });
    const queued = await shortLived.responses.create({
      model: BASE,
      input: "x",
      max_output_tokens: 2,
      background: true,
    });
    await h.db.update(apiKeys).set({ revokedAt: new Date() }).where(eq(apiKeys.id, created.record.id));
    await runner().drain();
    const failed = await client.responses.retrieve(queued.id);
    expect(failed.status).toBe("failed");
    expect(failed.error).toMatchObject({ code: "invalid_api_key" });
  });

  it("refuses background with store false or an unknown model, and stores nothing", async () => {
    await expect(
      client.responses.create({ model: BASE, input: "x", background: true, store: false }),
    ).rejects.toMatchObject({ status: 400, param: "store" });
    await expect(
      client.responses.create({ model: `${BASE}:acme/missing`, input: "x", background: true }),
    ).rejects.toMatchObject({ status: 404, code: "model_not_found" });
  });
});
