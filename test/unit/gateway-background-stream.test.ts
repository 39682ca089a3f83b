// Background responses created with `stream: true`, through the official `openai` client against the
// gateway over HTTP (in-process bus, scripted worker, a batch runner on the same app): the creating request
// streams the response from queued through its run; GET /v1/responses/{id}?stream=true resumes after any
// sequence number; a client that leaves does not stop the run; a cancelled or failed one ends its stream;
// a response not created streamed cannot be streamed again; a follower reads less often while nothing
// comes.
import { eq, sql } from "drizzle-orm";
import OpenAI from "openai";
import type { Stream } from "openai/core/streaming";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BatchRunner, type BatchRunnerOptions } from "../../gateway/batch-runner.ts";
import { type ServedApp, serveApp, startBatchRunner } from "../../gateway/node.ts";
import { quietMetrics } from "../../gateway/quiet-metrics.ts";
import { followLog } from "../../gateway/response-event-log.ts";
import { batchRequests, responseEvents, usageEvents } from "../../schema/db.ts";
import { FakeWorker, fakeReplyText } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { heldApp } from "../support/held-app.ts";

type Event = OpenAI.Responses.ResponseStreamEvent;

let h: GatewayHarness;
let worker: FakeWorker;
let served: ServedApp;
let client: OpenAI;

beforeAll(async () => {
  h = await createGatewayHarness({ limits: { backgroundStreamPollMs: 10 } });
  worker = await FakeWorker.start(h.workerBus, { base: BASE });
  await h.addAdapter({ name: "a1" });
  served = await serveApp(h.app, 0, "127.0.0.1");
  client = new OpenAI({ apiKey: h.keys.acme, baseURL: `${served.url}/v1`, maxRetries: 0 });
});
afterAll(async () => {
  await served.close();
  await worker.stop();
  await h.close();
});

function runnerOptions(app: BatchRunnerOptions["app"]): BatchRunnerOptions {
  return {
    app,
    db: h.db,
    log: h.deps.log,
    metrics: quietMetrics(),
    concurrency: 2,
    leaseMs: 60_000,
    newId: h.deps.newRequestId,
    runnerId: "runner-stream",
    now: Date.now,
  };
}

function runner(app: BatchRunnerOptions["app"] = h.app): BatchRunner {
  return new BatchRunner(runnerOptions(app));
}

/** Creates a streamed background response and leaves its stream at response.created; the response's id. */
async function createdAndLeft(input: string, maxOutputTokens: number): Promise<string> {
  const stream = await client.responses.create({
    model: BASE,
    input,
    max_output_tokens: maxOutputTokens,
    background: true,
    stream: true,
  });
  for await (const event of stream) {
    if (event.type === "response.created") return event.response.id;
  }
  return "";
}

async function collect(stream: Stream<Event>): Promise<Event[]> {
  const events: Event[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

/** The response's id from the stream's first event (response.created), and the events after it. */
async function opened(stream: Stream<Event>): Promise<{ id: string; rest: Promise<Event[]> }> {
  const events = stream[Symbol.asyncIterator]();
  const first = (await events.next()).value as Event;
  expect(first.type).toBe("response.created");
  const rest = (async () => {
    const later: Event[] = [];
    for (let step = await events.next(); !step.done; step = await events.next()) later.push(step.value);
    return later;
  })();
  return { id: (first as OpenAI.Responses.ResponseCreatedEvent).response.id, rest };
}

const deltas = (events: readonly Event[]) =>
  events.flatMap((e) => (e.type === "response.output_text.delta" ? [e.delta] : [])).join("");

describe("a background response created with stream", () => {
  it("streams from queued through its run, numbered in order, and ends with the stored response", async () => {
    const stream = await client.responses.create({
      model: `${BASE}:acme/a1`,
      input: "Write later, streamed",
      max_output_tokens: 4,
      background: true,
      stream: true,
    });
    const reading = collect(stream);
    // Run a second later than queued: the run's events keep the response's created_at all the same.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    await runner().drain();
    const events = await reading;
    expect(events.slice(0, 3).map((e) => e.type)).toEqual([
      "response.created",
      "response.queued",
      "response.in_progress",
    ]);
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    const first = events[0] as OpenAI.Responses.ResponseCreatedEvent;
    expect(first.response).toMatchObject({ status: "queued", background: true });
    expect(deltas(events)).toBe(fakeReplyText(4));
    const last = events.at(-1) as OpenAI.Responses.ResponseIncompleteEvent;
    expect(last.type).toBe("response.incomplete");
    const inProgress = events[2] as OpenAI.Responses.ResponseInProgressEvent;
    expect([inProgress.response.created_at, last.response.created_at]).toEqual([
      first.response.created_at,
      first.response.created_at,
    ]);
    // One response.created: the run's own is not repeated.
    expect(events.filter((e) => e.type === "response.created")).toHaveLength(1);
    const stored = await client.responses.retrieve(first.response.id);
    expect(stored).toMatchObject({
      id: first.response.id,
      status: "incomplete",
      created_at: first.response.created_at,
    });
    expect(stored.output).toEqual(last.response.output);
    expect(stored.output_text).toBe(fakeReplyText(4));

    // Resumed after any event: the same events from the next one on, ended as before.
    const resumed = await collect(
      await client.responses.retrieve(first.response.id, { stream: true, starting_after: 3 }),
    );
    expect(resumed).toEqual(events.slice(4));
    expect(await collect(await client.responses.retrieve(first.response.id, { stream: true }))).toEqual(
      events,
    );
  });

  it("runs on when its client leaves, and a later reader follows it to the end", async () => {
    const id = await createdAndLeft("Leave early", 3);
    expect(id).toMatch(/^resp_/);
    // Follow from the start while it runs.
    const following = collect(await client.responses.retrieve(id, { stream: true, starting_after: 0 }));
    await runner().drain();
    const events = await following;
    expect(events[0]?.type).toBe("response.queued");
    expect(events.at(-1)?.type).toBe("response.incomplete");
    expect(deltas(events)).toBe(fakeReplyText(3));
    expect((await client.responses.retrieve(id)).status).toBe("incomplete");
  });

  it("reads less often while nothing comes: twice as long after each empty read, up to ten times the poll", async () => {
    const id = await createdAndLeft("Wait for it", 2);
    // Queued, and no runner: its log holds what the create wrote, then nothing more comes.
    const waits: number[] = [];
    const seen: string[] = [];
    for await (const event of followLog(h.db, id, 0, {
      pollMs: 10,
      stopped: () => waits.length >= 7,
      sleep: async (ms) => void waits.push(ms),
    })) {
      seen.push(event.type);
    }
    expect(seen.length).toBeGreaterThan(0);
    expect(waits).toEqual([10, 10, 20, 40, 80, 100, 100]);
    await client.responses.cancel(id);
  });

  it("follows events holding characters Postgres text cannot (NUL, a lone surrogate) back as written", async () => {
    const id = await createdAndLeft("Odd characters", 2);
    const odd = { type: "response.output_text.delta", delta: "a\u0000b\ud800c\uffff", sequence_number: 2 };
    await h.db.insert(responseEvents).values({ responseId: id, sequenceNumber: 2, event: odd });
    const seen: unknown[] = [];
    for await (const event of followLog(h.db, id, 1, { pollMs: 10, stopped: () => seen.length > 0 })) {
      seen.push(event);
    }
    expect(seen).toEqual([odd]);
    await client.responses.cancel(id);
  });

  it("ends the stream of one cancelled while queued, and of one whose run failed with response.failed", async () => {
    const cancelled = await client.responses.create({
      model: BASE,
      input: "Never mind",
      background: true,
      stream: true,
    });
    const { id: cancelledId, rest: cancelledRest } = await opened(cancelled);
    expect((await client.responses.cancel(cancelledId)).status).toBe("cancelled");
    expect((await cancelledRest).map((e) => e.type)).toEqual(["response.queued"]);

    // Failed after its first token, for good (not a transient failure the runner would try again).
    worker.behaviour = () => ({ error: { code: "invalid_request", message: "no more" }, after: 1 });
    try {
      const failing = await client.responses.create({
        model: BASE,
        input: "Fail",
        max_output_tokens: 2,
        background: true,
        stream: true,
      });
      const events = collect(failing);
      await runner().drain();
      const seen = await events;
      expect(deltas(seen)).toBe(fakeReplyText(1));
      const last = seen.at(-1) as OpenAI.Responses.ResponseFailedEvent;
      expect(last.type).toBe("response.failed");
      expect(last.sequence_number).toBe(seen.length - 1);
      expect(last.response).toMatchObject({ status: "failed", error: { code: expect.any(String) } });
    } finally {
      worker.behaviour = () => "reply";
    }
  });

  it("runs again one whose run failed before its output began; fails, rather than streams twice, one after", async () => {
    // Retries wait out their backoff: this runner's clock jumps past it between passes.
    let skew = 0;
    const retrying = new BatchRunner({ ...runnerOptions(h.app), now: () => Date.now() + skew });
    const passes = async () => {
      await retrying.drain();
      skew += 120_000;
      await retrying.drain();
    };
    const create = (input: string) =>
      client.responses.create({ model: BASE, input, max_output_tokens: 3, background: true, stream: true });
    const runs: string[] = [];
    const failFirst = (after: number) => (request: { id: string }) => {
      runs.push(request.id);
      return runs.length === 1
        ? { error: { code: "engine_failed", message: "the engine stopped" }, after }
        : "reply";
    };
    try {
      worker.behaviour = failFirst(0);
      const early = collect(await create("Fail before any token"));
      await passes();
      const retried = await early;
      expect(runs).toHaveLength(2);
      expect(deltas(retried)).toBe(fakeReplyText(3));
      expect(retried.at(-1)?.type).toBe("response.incomplete");

      runs.length = 0;
      worker.behaviour = failFirst(1);
      const late = collect(await create("Fail after a token"));
      await passes();
      const seen = await late;
      expect(runs).toHaveLength(1);
      expect(deltas(seen)).toBe(fakeReplyText(1));
      const last = seen.at(-1) as OpenAI.Responses.ResponseFailedEvent;
      expect(last.type).toBe("response.failed");
      expect(last.response.error).toMatchObject({ code: "run_interrupted" });
      expect(last.response.error?.message).toContain("the engine stopped");
      expect((await client.responses.retrieve(last.response.id)).status).toBe("failed");
    } finally {
      worker.behaviour = () => "reply";
    }
  });

  it("fails one whose gateway stops while its output streams, rather than hand it back to be run again", async () => {
    worker.behaviour = () => ({ partial: 1 });
    const stopping = new BatchRunner(runnerOptions(h.app));
    try {
      const stream = await client.responses.create({
        model: BASE,
        input: "Interrupted",
        max_output_tokens: 3,
        background: true,
        stream: true,
      });
      const events = stream[Symbol.asyncIterator]();
      const seen: Event[] = [];
      stopping.start();
      while (seen.at(-1)?.type !== "response.output_text.delta")
        seen.push((await events.next()).value as Event);
      await stopping.stop(0);
      for (let step = await events.next(); !step.done; step = await events.next()) seen.push(step.value);
      expect(deltas(seen)).toBe(fakeReplyText(1));
      const last = seen.at(-1) as OpenAI.Responses.ResponseFailedEvent;
      expect(last.type).toBe("response.failed");
      expect(last.response.error).toMatchObject({ code: "run_interrupted" });
      expect(last.response.error?.message).toContain("shut down");
      // Nothing was handed back: another runner finds nothing to run.
      const pulled = worker.received.length;
      await runner().drain();
      expect(worker.received).toHaveLength(pulled);
    } finally {
      worker.behaviour = () => "reply";
    }
  });

  it("fails, without running it, one whose earlier run streamed output and whose gateway then died", async () => {
    const { id, rest } = await opened(
      await client.responses.create({
        model: BASE,
        input: "Orphaned",
        max_output_tokens: 3,
        background: true,
        stream: true,
      }),
    );
    // What a run leaves in the log before its process dies: a delta after the queued event.
    await h.db.execute(
      sql`insert into response_events (response_id, sequence_number, event) values (${id}, 2,
        ${JSON.stringify({ type: "response.output_text.delta", delta: "Half", sequence_number: 2 })}::jsonb)`,
    );
    // Its runner's claim ran out two minutes ago (the lease is one).
    await h.db
      .update(batchRequests)
      .set({ status: "running", claimedBy: "dead-runner", claimedAt: new Date(Date.now() - 120_000) })
      .where(eq(batchRequests.customId, id.replace(/^resp_/, "")));
    const waivedRows = async () =>
      (await h.db.select().from(usageEvents).where(eq(usageEvents.waived, true))).length;
    const waived = await waivedRows();
    const pulled = worker.received.length;
    await runner().drain();
    expect(worker.received).toHaveLength(pulled);
    const last = (await rest).at(-1) as OpenAI.Responses.ResponseFailedEvent;
    expect(last.type).toBe("response.failed");
    expect(last.response.error).toMatchObject({ code: "run_interrupted" });
    // Not run again, so the dead run, whose output went out, is not waived: it stays billed.
    expect(await waivedRows()).toBe(waived);
  });

  it("takes no more events once cancelled while it runs: its stream ends, the log holds nothing of the run", async () => {
    // The run is held at its start, after the runner marked it in_progress.
    const { app: held, release } = heldApp(h.app);
    const stream = await client.responses.create({
      model: BASE,
      input: "Cancelled midway",
      max_output_tokens: 3,
      background: true,
      stream: true,
    });
    const { id, rest } = await opened(stream);
    const draining = runner(held).drain();
    for (let i = 0; i < 200 && (await client.responses.retrieve(id)).status !== "in_progress"; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect((await client.responses.cancel(id)).status).toBe("cancelled");
    release();
    await draining;
    expect((await rest).map((e) => e.type)).toEqual(["response.queued"]);
    expect((await collect(await client.responses.retrieve(id, { stream: true }))).length).toBe(2);
    expect((await client.responses.retrieve(id)).status).toBe("cancelled");
  });

  it("is run at once by its gateway's own batch runner, which is told of it rather than waiting to poll", async () => {
    // A runner that looks for work once a minute: only the nudge can start this run within the test.
    const started = startBatchRunner(h.app, h.deps, 2, 0.75, 60_000)!;
    try {
      await new Promise((resolve) => setTimeout(resolve, 100));
      const events = await collect(
        await client.responses.create({
          model: BASE,
          input: "Now, please",
          max_output_tokens: 2,
          background: true,
          stream: true,
        }),
      );
      expect(events.at(-1)?.type).toBe("response.incomplete");
      expect(deltas(events)).toBe(fakeReplyText(2));
    } finally {
      await started.stop();
    }
  }, 20_000);

  it("fails, and ends the stream of, one whose run answered but could not store its answer", async () => {
    const { id, rest } = await opened(
      await client.responses.create({
        model: BASE,
        input: "Unstorable",
        max_output_tokens: 2,
        background: true,
        stream: true,
      }),
    );
    // The database refuses this response's ended form, as a broken store would.
    await h.db.execute(
      sql.raw(`create function refuse_ended() returns trigger language plpgsql as $$
        begin raise exception 'store refused'; end $$`),
    );
    await h.db.execute(
      sql.raw(`create trigger refuse_ended before update on stored_responses for each row
        when (new.id = '${id}' and new.response ->> 'status' in ('completed', 'incomplete'))
        execute function refuse_ended()`),
    );
    try {
      await runner().drain();
    } finally {
      await h.db.execute(sql.raw("drop trigger refuse_ended on stored_responses"));
      await h.db.execute(sql.raw("drop function refuse_ended()"));
    }
    const last = (await rest).at(-1) as OpenAI.Responses.ResponseFailedEvent;
    expect(last.type).toBe("response.failed");
    expect(last.response.error).toMatchObject({ code: "server_error" });
    expect((await client.responses.retrieve(id)).status).toBe("failed");
  });

  it("refuses to stream a response not created with background and stream, or a bad starting_after", async () => {
    const plain = await client.responses.create({ model: BASE, input: "x", max_output_tokens: 1 });
    await expect(client.responses.retrieve(plain.id, { stream: true })).rejects.toMatchObject({
      status: 400,
      param: "stream",
    });
    const queued = await client.responses.create({ model: BASE, input: "x", background: true });
    await expect(client.responses.retrieve(queued.id, { stream: true })).rejects.toMatchObject({
      status: 400,
      param: "stream",
    });
    await expect(
      client.responses.retrieve(queued.id, { stream: true, starting_after: -2 }),
    ).rejects.toMatchObject({ status: 400, param: "starting_after" });
    await client.responses.cancel(queued.id);
  });
});
