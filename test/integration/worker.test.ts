// `luminet worker` processes against the real NATS: two long-lived workers (a, b) serve most tests; three
// more are started to be stopped (SIGTERM) or killed (SIGKILL). The test plays the gateway through the bus
// (reply inboxes, requests, cancels, control events) and the meter (a usage consumer). The tiny model has no
// end-of-text token here, so every request generates exactly max_tokens unless stopped.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createInbox, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Bus, Subscription } from "../../bus/bus.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { WorkerLostError } from "../../bus/reply-inbox.ts";
import {
  type AdapterRef,
  ANY_WORKER,
  ClaimAnswer,
  claimSubject,
  decode,
  encode,
  type Final,
  greedySampling,
  type InferenceRequest,
  Reply,
  ReplyClaim,
  type TokenChunk,
  type UsageEvent,
  WIRE_VERSION,
  type WorkerHeartbeat,
} from "../../schema/wire.ts";
import { type LuminetProcess, startLuminetProcess } from "../../scripts/luminet-process.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { sha256OfFile } from "../../worker/adapters/disk-cache.ts";

const BASE = "tiny/llama";
const ADAPTERS = 24;
const ACK_WAIT_MS = 2000;
/** Short, so a dead worker's queue is adopted soon after it stops beating (the default is 5 s). */
const HEARTBEAT_TTL_MS = 2000;
const namespace = `worker_${process.pid}_${Date.now()}`;

let root: string;
let modelDir: string;
let natsUrl: string;
let bus: Bus;
let usageSubscription: Subscription;
const refs: AdapterRef[] = [];
const usage = new Map<string, UsageEvent[]>();
const workers = new Map<string, Spawned>();

interface Spawned {
  id: string;
  process: LuminetProcess;
  metricsPort: number;
  logs: Record<string, unknown>[];
  exited: Promise<number | null>;
}

async function spawnWorker(id: string, extra: string[] = []): Promise<Spawned> {
  const child = await startLuminetProcess({
    args: [
      "worker",
      ...["--model", modelDir, "--base", BASE, "--worker-id", id, "--namespace", namespace],
      ...["--slots", "18", "--max-adapters-per-batch", "16", "--max-rank", "4", "--max-context", "1024"],
      ...["--threads", "1", "--blobs", join(modelDir, "adapters"), "--disk-cache", join(root, `cache-${id}`)],
      ...["--usage-spool", join(root, `usage-spool-${id}`)],
      ...["--metrics-port", "0", "--ack-wait-ms", String(ACK_WAIT_MS)],
      ...["--heartbeat-ttl-ms", String(HEARTBEAT_TTL_MS), ...extra],
    ],
    env: { NATS_URL: natsUrl, LOG_LEVEL: "info" },
    ready: (entry) => entry.msg === "worker ready",
  });
  const spawned = {
    id,
    process: child,
    metricsPort: child.readyEntry.metricsPort as number,
    logs: child.logs,
    exited: child.exited,
  };
  workers.set(id, spawned);
  return spawned;
}

function request(id: string, adapter: number | null, maxTokens: number, reply: string): InferenceRequest {
  return {
    v: WIRE_VERSION,
    id: `${namespace}-${id}`,
    org: adapter === null ? "org-base" : `org-${adapter % 3}`,
    api_key_id: "key-1",
    base: BASE,
    adapter: adapter === null ? null : refs[adapter]!,
    prompt_token_ids: [1, 40 + (id.length % 30), 60, 70],
    sampling: greedySampling(maxTokens),
    reply,
    created_at: Date.now(),
    deadline: Date.now() + 120_000,
  };
}

interface Answer {
  request: InferenceRequest;
  chunks: TokenChunk[];
  final: Final;
}

/** Publishes a request as the gateway does (inbox first) and reads the whole reply. */
async function ask(
  name: string,
  adapter: number | null,
  maxTokens: number,
  target = ANY_WORKER,
  onChunk?: (chunk: TokenChunk, req: InferenceRequest) => void,
  fields: Partial<InferenceRequest> = {},
): Promise<Answer> {
  const inbox = await bus.openReplyInbox();
  const req = { ...request(name, adapter, maxTokens, inbox.subject), ...fields };
  await bus.publishRequest(req, target);
  const chunks: TokenChunk[] = [];
  for await (const reply of inbox) {
    if (reply.type === "final") return { request: req, chunks, final: reply };
    chunks.push(reply);
    onChunk?.(reply, req);
  }
  throw new Error(`the reply inbox of ${name} closed without a Final`);
}

function tokensIn(chunks: TokenChunk[]): number {
  return chunks.reduce((n, c) => n + c.token_ids.length, 0);
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function usageOf(requestId: string): Promise<UsageEvent[]> {
  return eventually(`the usage event of ${requestId}`, () => usage.get(requestId));
}

async function heartbeatOf(id: string, ready: (h: WorkerHeartbeat) => boolean): Promise<WorkerHeartbeat> {
  return eventually(`a matching heartbeat from ${id}`, async () =>
    (await bus.liveHeartbeats(BASE)).find((h) => h.worker_id === id && ready(h)),
  );
}

async function metric(worker: Spawned, series: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${worker.metricsPort}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

beforeAll(async () => {
  natsUrl = inject("natsUrl");
  root = mkdtempSync(join(tmpdir(), "luminet-worker-"));
  // No end-of-text token: a request stops at max_tokens, a cancel or a kill, never by chance.
  const tiny = initTinyModel(join(root, "model"), {
    shape: "tiny",
    adapters: ADAPTERS,
    rank: 4,
    seed: 21,
    endOfText: false,
  });
  modelDir = tiny.dir;
  for (let i = 0; i < ADAPTERS; i++) {
    const sha256 = await sha256OfFile(join(tiny.adapterDirs[i]!, "adapter_model.safetensors"));
    refs.push({ name: `org-${i % 3}/adapter-${i}`, blob_key: `adapter-${i}`, sha256: sha256!, rank: 4 });
  }
  bus = await connectJetStreamBus({
    servers: natsUrl,
    namespace,
    ackWaitMs: ACK_WAIT_MS,
    heartbeatTtlMs: HEARTBEAT_TTL_MS,
  });
  usageSubscription = await bus.consumeUsage(async (event) => {
    usage.set(event.request_id, [...(usage.get(event.request_id) ?? []), event]);
  });
  await Promise.all(["a", "b"].map((id) => spawnWorker(id)));
}, 120_000);

afterAll(async () => {
  await Promise.all([...workers.values()].map((w) => w.process.kill()));
  await usageSubscription?.close();
  await bus?.close();
  rmSync(root, { recursive: true, force: true });
});

describe("luminet worker", () => {
  it("forms mixed-adapter batches over 16 adapters on two workers, one usage event per request", async () => {
    const answers = await Promise.all(Array.from({ length: 32 }, (_, i) => ask(`mix-${i}`, i % 16, 12)));
    for (const { request: req, chunks, final } of answers) {
      expect(final).toMatchObject({ finish_reason: "length", seq: chunks.length });
      // 4-token prompts: no whole 16-token block for a prefix cache to cover.
      expect(final.usage).toEqual({ prompt_tokens: 4, completion_tokens: 12, cached_tokens: 0 });
      expect(tokensIn(chunks)).toBe(12);
      expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
      const events = await usageOf(req.id);
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({
        input_tokens: 4,
        output_tokens: 12,
        finish_reason: "length",
        adapter: req.adapter!.name,
        org: req.org,
      });
    }
    let steps = 0;
    let singleAdapterSteps = 0;
    for (const id of ["a", "b"]) {
      steps += await metric(workers.get(id)!, "luminet_batch_distinct_adapters_count");
      singleAdapterSteps += await metric(workers.get(id)!, 'luminet_batch_distinct_adapters_bucket{le="1"}');
    }
    expect(steps).toBeGreaterThan(0);
    expect(steps - singleAdapterSteps).toBeGreaterThan(0);
    // The process's own series ride along: a worker that ran steps has spent CPU and has a heap.
    expect(await metric(workers.get("a")!, "process_cpu_seconds_total")).toBeGreaterThan(0);
    // The same port answers an orchestrator's probes.
    const probe = (path: string) => fetch(`http://127.0.0.1:${workers.get("a")!.metricsPort}${path}`);
    expect((await probe("/healthz")).status).toBe(200);
    expect(await (await probe("/readyz")).text()).toBe("ready\n");
    expect(await metric(workers.get("a")!, "nodejs_heap_size_used_bytes")).toBeGreaterThan(0);
  });

  it("finishes a short request sent while a long one runs first", async () => {
    const finished: string[] = [];
    let short: Promise<Answer> | undefined;
    const long = ask("long", 1, 400, "a", () => {
      short ??= ask("short", 2, 4, "a").then((answer) => {
        finished.push("short");
        return answer;
      });
    }).then((answer) => {
      finished.push("long");
      return answer;
    });
    expect((await long).final.usage.completion_tokens).toBe(400);
    expect((await short!).final.usage.completion_tokens).toBe(4);
    expect(finished).toEqual(["short", "long"]);
  });

  it("stops a cancelled request and bills only the tokens it generated", async () => {
    let cancelled = false;
    const answer = await ask("cancel", 3, 900, "a", (chunk, req) => {
      if (chunk.seq < 4 || cancelled) return;
      cancelled = true;
      bus.publishCancel(BASE, { v: WIRE_VERSION, request_id: req.id });
    });
    expect(answer.final.finish_reason).toBe("cancelled");
    const generated = answer.final.usage.completion_tokens;
    expect(generated).toBeGreaterThanOrEqual(5);
    expect(generated).toBeLessThan(900);
    expect(tokensIn(answer.chunks)).toBe(generated);
    const events = await usageOf(answer.request.id);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      output_tokens: generated,
      input_tokens: 4,
      finish_reason: "cancelled",
    });
  });

  it("keeps pinned adapters through eviction pressure and refuses the 17th pin", async () => {
    const control = (kind: "pin" | "unpin", i: number) =>
      bus.publishControl({
        v: WIRE_VERSION,
        kind,
        base: BASE,
        adapter: refs[i]!.name,
        pinned: kind === "pin",
        blob: { blob_key: refs[i]!.blob_key, sha256: refs[i]!.sha256, rank: 4 },
        at: Date.now(),
      });
    for (let i = 0; i < 17; i++) await control("pin", i);
    const pinned = refs.slice(0, 16).map((r) => r.name);
    const refused = refs[16]!.name;
    for (const id of ["a", "b"]) {
      // A pin's load puts the adapter in a slot a moment before the pin is recorded: wait for both.
      const beat = await heartbeatOf(
        id,
        (h) => pinned.every((name) => h.adapters.slot.includes(name)) && h.pins.length >= pinned.length,
      );
      expect(beat.pins.sort()).toEqual([...pinned].sort());
      expect(beat.free_slots).toBe(2);
      const refusal = workers
        .get(id)!
        .logs.find((l) => String(l.msg).startsWith(`pin of adapter ${refused}`));
      expect(String(refusal?.msg)).toMatch(/refused: .*16/);
    }
    const evictionsBefore = await metric(workers.get("a")!, 'luminet_adapter_evictions_total{tier="slot"}');
    // Seven unpinned adapters take turns in the two slots the pins leave.
    const pressure = await Promise.all(
      Array.from({ length: 14 }, (_, i) => ask(`pressure-${i}`, 17 + (i % 7), 4, "a")),
    );
    for (const answer of pressure) expect(answer.final.finish_reason).toBe("length");
    expect(
      await metric(workers.get("a")!, 'luminet_adapter_evictions_total{tier="slot"}'),
    ).toBeGreaterThanOrEqual(evictionsBefore + 5);
    const after = await heartbeatOf("a", () => true);
    for (const name of pinned) expect(after.adapters.slot).toContain(name);
    expect(after.pins.sort()).toEqual([...pinned].sort());
    for (let i = 0; i < 17; i++) await control("unpin", i);
    await heartbeatOf("a", (h) => h.pins.length === 0);
    await heartbeatOf("b", (h) => h.pins.length === 0);
  });

  it("evicts a deleted adapter on every worker and fails its requests with 404", async () => {
    const gone = refs[23]!;
    await Promise.all([ask("before-delete-a", 23, 2, "a"), ask("before-delete-b", 23, 2, "b")]);
    await bus.publishControl({
      v: WIRE_VERSION,
      kind: "delete",
      base: BASE,
      adapter: gone.name,
      pinned: false,
      blob: null,
      at: Date.now(),
    });
    for (const id of ["a", "b"]) {
      await heartbeatOf(
        id,
        (h) => ![...h.adapters.slot, ...h.adapters.ram, ...h.adapters.disk].includes(gone.name),
      );
    }
    const answer = await ask("after-delete", 23, 4, "b");
    expect(answer.final.finish_reason).toBe("error");
    expect(answer.final.error).toEqual({
      code: "model_not_found",
      message: `adapter ${gone.name} was deleted`,
    });
    expect(await usageOf(answer.request.id)).toMatchObject([{ output_tokens: 0, finish_reason: "error" }]);
  });

  it("fails a request whose adapter cannot be loaded with the reason, and only that request", async () => {
    const inbox = await bus.openReplyInbox();
    const broken = request("broken-blob", null, 4, inbox.subject);
    broken.adapter = { name: "org-0/missing", blob_key: "no-such-adapter", sha256: "0".repeat(64), rank: 4 };
    const [, fine] = await Promise.all([bus.publishRequest(broken, "a"), ask("beside-broken", 7, 4, "a")]);
    let final: Final | undefined;
    for await (const reply of inbox) if (reply.type === "final") final = reply;
    expect(final?.finish_reason).toBe("error");
    expect(final?.error?.code).toBe("adapter_unavailable");
    expect(final?.error?.message).toContain("no-such-adapter");
    expect(fine.final.finish_reason).toBe("length");
  });

  it("refuses reasoning tags without a structured format, or outside the vocabulary, and a regex or grammar it cannot compile, saying why", async () => {
    const refusal = async (name: string, sampling: Partial<InferenceRequest["sampling"]>) => {
      const inbox = await bus.openReplyInbox();
      const refused = request(name, null, 4, inbox.subject);
      refused.sampling = { ...refused.sampling, ...sampling };
      await bus.publishRequest(refused, "a");
      let final: Final | undefined;
      for await (const reply of inbox) if (reply.type === "final") final = reply;
      expect(final?.finish_reason).toBe("error");
      expect(final?.error?.code).toBe("invalid_request");
      return final?.error?.message;
    };
    expect(await refusal("tags-alone", { reasoning_tags: { open: null, close: 5 } })).toContain(
      "only with a structured response_format",
    );
    // A regex or grammar the gateway would have refused: the worker compiles it too, and says why.
    expect(await refusal("bad-regex", { response_format: { regex: "a(?=b)" } })).toMatch(
      /^response_format: regex "a\(\?=b\)": /,
    );
    expect(await refusal("bad-grammar", { response_format: { grammar: 'root ::= root "a" | "b"' } })).toMatch(
      /^response_format: rule root calls itself before reading any character/,
    );
    expect(
      await refusal("tags-outside", {
        response_format: "json_object",
        reasoning_tags: { open: 600, close: 5 },
      }),
    ).toContain("reasoning tag token id 600 is outside the vocabulary of 512");
  });

  it("lets a live request preempt running batch lines; each streams on where it stopped, billed once", async () => {
    const worker = await spawnWorker("p", ["--max-batch", "2"]);
    // What each line generates uninterrupted (the prompt follows the name's length: "solo-i" as "line-i").
    const solo = await Promise.all([0, 1].map((i) => ask(`solo-${i}`, i, 400, "a")));
    const finished: string[] = [];
    const streaming = new Set<number>();
    let live: Promise<Answer> | undefined;
    const lines = [0, 1].map((i) =>
      ask(
        `line-${i}`,
        i,
        400,
        "p",
        () => {
          streaming.add(i);
          // Both lines hold the worker's two places when the live request comes.
          if (streaming.size < 2) return;
          live ??= ask("live", 2, 3, "p").then((answer) => {
            finished.push("live");
            return answer;
          });
        },
        { batch: true },
      ).then((answer) => {
        finished.push(`line-${i}`);
        return answer;
      }),
    );
    const answers = await Promise.all(lines);
    expect((await live!).final.usage.completion_tokens).toBe(3);
    expect(finished[0]).toBe("live");
    expect(await metric(worker, "luminet_preemptions_total")).toBeGreaterThanOrEqual(1);
    // Each request's first token observed once, under its tier: a preempted line does not count again.
    const firstTokens = (tier: string) =>
      metric(worker, `luminet_time_to_first_token_seconds_count{tier="${tier}"}`);
    expect(await firstTokens("batch")).toBe(2);
    expect(await firstTokens("standard")).toBe(1);
    expect(await firstTokens("priority")).toBe(0);
    for (const [i, { request: req, chunks, final }] of answers.entries()) {
      expect(final).toMatchObject({ finish_reason: "length", seq: chunks.length });
      expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, k) => k));
      expect(chunks.flatMap((c) => c.token_ids)).toEqual(solo[i]!.chunks.flatMap((c) => c.token_ids));
      expect(final.usage).toEqual({ prompt_tokens: 4, completion_tokens: 400, cached_tokens: 0 });
      const events = await usageOf(req.id);
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ input_tokens: 4, output_tokens: 400, batch: true });
    }
    worker.process.signal("SIGTERM");
    expect(await worker.exited).toBe(0);
  });

  it("drains on SIGTERM, sent twice: running requests finish, the rest are served elsewhere, it exits 0", async () => {
    const drained = await spawnWorker("c", ["--max-batch", "2"]);
    // A view that keeps heartbeats for a minute: "c" leaves it only by leaving the bucket.
    const patient = await connectJetStreamBus({ servers: natsUrl, namespace, heartbeatTtlMs: 60_000 });
    const beat = await eventually("c in a patient heartbeat view", async () =>
      (await patient.liveHeartbeats(BASE)).find((h) => h.worker_id === "c"),
    );
    // Its --max-batch, which the autoscaling signal plans with.
    expect(beat.max_batch).toBe(2);
    let signalled = false;
    const answers = Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        ask(`drain-${i}`, i, 60, "c", () => {
          if (signalled) return;
          signalled = true;
          drained.process.signal("SIGTERM");
          // A supervisor may repeat it: the drain goes on.
          setTimeout(() => drained.process.signal("SIGTERM"), 100);
        }),
      ),
    );
    for (const { request: req, chunks, final } of await answers) {
      expect(final.finish_reason).toBe("length");
      expect(tokensIn(chunks)).toBe(60);
      expect(await usageOf(req.id)).toHaveLength(1);
    }
    expect(await drained.exited).toBe(0);
    expect(drained.logs.some((l) => l.msg === "drained")).toBe(true);
    await eventually("c gone from the heartbeats well before their TTL", async () =>
      (await patient.liveHeartbeats(BASE)).every((h) => h.worker_id !== "c") ? true : undefined,
    );
    await patient.close();
  });

  it("serves on another worker a request whose worker was killed before its first token", async () => {
    const doomed = await spawnWorker("d");
    const nc: NatsConnection = await connect({ servers: natsUrl });
    try {
      const inbox = createInbox();
      const replies: Reply[] = [];
      const done = new Promise<void>((resolve) => {
        nc.subscribe(inbox, {
          callback: (_, msg) => {
            const reply = decode(Reply, msg.data);
            replies.push(reply);
            if (reply.type === "final") resolve();
          },
        });
      });
      const claimants: string[] = [];
      nc.subscribe(claimSubject(inbox), {
        callback: (_, msg) => {
          const claim = decode(ReplyClaim, msg.data);
          claimants.push(claim.worker_id);
          // The first claimant dies holding the request, before any token went out.
          if (claim.worker_id === "d") doomed.process.signal("SIGKILL");
          else msg.respond(encode(ClaimAnswer, { v: WIRE_VERSION, granted: true }));
        },
      });
      await nc.flush();
      const req = request("killed-early", 5, 8, inbox);
      await bus.publishRequest(req, "d");
      await done;
      expect(claimants[0]).toBe("d");
      expect(claimants.slice(1).every((id) => id === "a" || id === "b")).toBe(true);
      const final = replies.at(-1) as Final;
      expect(final).toMatchObject({ finish_reason: "length", usage: { completion_tokens: 8 } });
      expect(tokensIn(replies.filter((r): r is TokenChunk => r.type === "chunk"))).toBe(8);
      const events = await usageOf(req.id);
      expect(events).toHaveLength(1);
      expect(events[0]?.output_tokens).toBe(8);
    } finally {
      await nc.close();
    }
  });

  it("ends the stream with an error when a worker dies after its tokens went out; one usage event", async () => {
    const doomed = await spawnWorker("e");
    const inbox = await bus.openReplyInbox();
    const req = request("killed-late", 6, 900, inbox.subject);
    await bus.publishRequest(req, "e");
    const chunks: TokenChunk[] = [];
    let failure: unknown;
    try {
      for await (const reply of inbox) {
        if (reply.type === "final") throw new Error("the request finished before its worker was killed");
        chunks.push(reply);
        if (chunks.length === 1) doomed.process.signal("SIGKILL");
      }
    } catch (error) {
      failure = error;
    }
    expect(failure).toBeInstanceOf(WorkerLostError);
    expect((failure as WorkerLostError).lostWorkerId).toBe("e");
    // The worker that took the redelivery was refused and dropped it: no worker billed the lost stream.
    // The gateway bills what reached the client, once.
    for (const id of ["a", "b"]) await heartbeatOf(id, (h) => h.running === 0 && h.queue_depth === 0);
    expect(usage.get(req.id)).toBeUndefined();
    const billed = await bus.publishUsage({
      v: WIRE_VERSION,
      request_id: req.id,
      org: req.org,
      api_key_id: req.api_key_id,
      base: BASE,
      adapter: req.adapter!.name,
      input_tokens: 4,
      output_tokens: tokensIn(chunks),
      finish_reason: "error",
      started_ms: req.created_at,
      finished_ms: Date.now(),
    });
    expect(billed.duplicate).toBe(false);
    expect(await usageOf(req.id)).toHaveLength(1);
  });
});
