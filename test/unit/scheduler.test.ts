// The worker's scheduler over a real engine (tiny model, in this thread). The adapter tiers are replaced by
// a small slot table that loads PEFT folders straight into the engine, with a gate per adapter so a test
// decides when a "cold" adapter's load completes or fails.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { AdapterRef } from "../../schema/wire.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { NoFreeSlotError } from "../../worker/adapters/adapter-manager.ts";
import { type LoadedAdapter, loadPeftAdapter } from "../../worker/adapters/peft.ts";
import { Engine } from "../../worker/engine/engine.ts";
import { compileJsonSchema } from "../../worker/engine/json-schema.ts";
import { type PromptTokenLogprob, promptTokenLogprob } from "../../worker/engine/prompt-logprobs.ts";
import { GREEDY } from "../../worker/engine/sampler.ts";
import { compileFullMatch } from "../../worker/engine/string-automaton.ts";
import { loadTokenizer, type Tokenizer } from "../../worker/engine/tokenizer.ts";
import {
  type AdapterSlots,
  type Job,
  JobError,
  type Outcome,
  Scheduler,
  type SchedulerEngine,
  type SchedulerOptions,
  type StepReport,
} from "../../worker/scheduler.ts";

const ADAPTERS = 8;
let root: string;
let modelDir: string;
let tokenizer: Tokenizer;
const loaded: LoadedAdapter[] = [];
const engines: Engine[] = [];

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-scheduler-"));
  const tiny = initTinyModel(join(root, "model"), { shape: "tiny", adapters: ADAPTERS, rank: 4, seed: 11 });
  modelDir = tiny.dir;
  tokenizer = loadTokenizer(modelDir);
  for (const dir of tiny.adapterDirs) loaded.push(loadPeftAdapter(dir, tiny.config, { maxRank: 4 }));
});

afterAll(async () => {
  for (const engine of engines) await engine.close();
  rmSync(root, { recursive: true, force: true });
});

function ref(i: number): AdapterRef {
  return { name: `org-${i % 2}/adapter-${i}`, blob_key: `adapter-${i}`, sha256: loaded[i]!.sha256, rank: 4 };
}

/** Slots for the engine: an acquire writes the adapter into a free slot once its gate opens. */
class TestSlots implements AdapterSlots {
  readonly prefetched: string[] = [];
  readonly acquires: string[] = [];
  private readonly slotOf = new Map<string, { slot: number; refs: number }>();
  private readonly gates = new Map<string, Promise<void>>();
  private readonly failures = new Map<string, Error>();
  private refusals = 0;

  constructor(
    private readonly engine: Engine,
    private readonly slots: number,
  ) {}

  /** The adapter's acquires wait until the returned function is called. */
  gate(name: string): () => void {
    let open = () => {};
    this.gates.set(
      name,
      new Promise((resolve) => {
        open = resolve;
      }),
    );
    return open;
  }

  failWith(name: string, error: Error): void {
    this.failures.set(name, error);
  }

  /** The next `count` acquires find every slot in use. */
  refuse(count: number): void {
    this.refusals = count;
  }

  prefetch(adapter: AdapterRef): void {
    this.prefetched.push(adapter.name);
  }

  async acquire(adapter: AdapterRef): Promise<number> {
    this.acquires.push(adapter.name);
    await this.gates.get(adapter.name);
    const failure = this.failures.get(adapter.name);
    if (failure) throw failure;
    if (this.refusals > 0) {
      this.refusals--;
      throw new NoFreeSlotError("every slot is in use");
    }
    const held = this.slotOf.get(adapter.name);
    if (held) {
      held.refs++;
      return held.slot;
    }
    const used = new Set([...this.slotOf.values()].map((s) => s.slot));
    const slot = Array.from({ length: this.slots }, (_, i) => i + 1).find((s) => !used.has(s));
    if (slot === undefined) throw new NoFreeSlotError("every slot is in use");
    this.slotOf.set(adapter.name, { slot, refs: 1 });
    await this.engine.writeAdapter(slot, loaded[Number(adapter.blob_key.split("-")[1])]!);
    return slot;
  }

  release(adapter: AdapterRef): void {
    const held = this.slotOf.get(adapter.name)!;
    held.refs--;
    if (held.refs === 0) this.slotOf.delete(adapter.name);
  }

  get held(): number {
    return this.slotOf.size;
  }
}

/** The engine as the scheduler sees a CUDA engine's: without park and resume. */
function withoutParking(engine: Engine): SchedulerEngine {
  return {
    padsPrefills: engine.padsPrefills,
    prefixReadyAfterPrefill: engine.prefixReadyAfterPrefill,
    prefillTogether: (prompts) => engine.prefillTogether(prompts),
    decodePicking: (tokens, choices) => engine.decodePicking(tokens, choices),
    logitsOf: (id) => engine.logitsOf(id),
    release: (id) => engine.release(id),
    reusedPromptTokens: (ids) => engine.reusedPromptTokens(ids),
    cachedPrefixLength: (prompt) => engine.cachedPrefixLength(prompt),
  };
}

async function setUp(
  options: Partial<SchedulerOptions> & {
    slots?: number;
    prefixCacheBytes?: number;
    /** The engine parks preempted sequences (true), has no park (false), or has one that fails. */
    parks?: boolean | "fails";
  } = {},
) {
  const slots = options.slots ?? ADAPTERS;
  const engine = await Engine.create({
    modelDir,
    device: "cpu",
    maxContext: 128,
    slots,
    maxRank: 4,
    maxAdaptersPerStep: 16,
    threads: 1,
    ...(options.prefixCacheBytes ? { prefixCacheBytes: options.prefixCacheBytes } : {}),
  });
  engines.push(engine);
  const adapters = new TestSlots(engine, slots);
  const steps: StepReport[] = [];
  const { parks = true, ...schedulerOptions } = options;
  const failingPark: SchedulerEngine = {
    ...withoutParking(engine),
    park: () => Promise.reject(new Error("out of memory for the copy")),
    resume: (id, slot) => engine.resume(id, slot),
  };
  const served = parks === true ? engine : parks === false ? withoutParking(engine) : failingPark;
  const scheduler = new Scheduler(served, tokenizer, adapters, {
    maxBatch: 16,
    maxContext: 128,
    stepTokenBudget: 256,
    maxAdaptersPerStep: 4,
    onStep: (step) => steps.push(step),
    ...schedulerOptions,
  });
  return { engine, adapters, scheduler, steps };
}

function job(id: string, adapter: number | null, maxTokens: number, overrides: Partial<Job> = {}): Job {
  return {
    id,
    org: adapter === null ? "org-base" : `org-${adapter % 2}`,
    adapter: adapter === null ? null : ref(adapter),
    promptTokens: [1, 40 + (id.length % 7), 41, 42],
    sampling: GREEDY,
    // No stop token: every job generates exactly maxTokens.
    limits: { maxTokens, stopTokenIds: [] },
    ...overrides,
  };
}

function done(outcome: Outcome) {
  if (outcome.kind !== "done") throw new Error(`expected a finished job, got ${outcome.kind}`);
  return outcome;
}

describe("scheduler", () => {
  it("mixes adapters in one step but never more than the per-step limit", async () => {
    const { scheduler, steps, adapters } = await setUp({ maxAdaptersPerStep: 4 });
    const outcomes = await Promise.all(
      Array.from({ length: 16 }, (_, i) => scheduler.submit(job(`mix-${i}`, i % ADAPTERS, 6))),
    );
    for (const outcome of outcomes) {
      expect(done(outcome).finishReason).toBe("length");
      expect(done(outcome).tokens).toHaveLength(6);
      expect(done(outcome).promptTokens).toBe(4);
    }
    expect(Math.max(...steps.map((s) => s.distinctAdapters))).toBe(4);
    expect(adapters.prefetched).toHaveLength(16);
    expect(adapters.held).toBe(0);
    expect(scheduler.tokensGenerated).toBe(16 * 6);
  });

  it("gives the same tokens to a sequence alone and inside a mixed batch", async () => {
    const { scheduler } = await setUp();
    const alone = done(await scheduler.submit(job("alone", 3, 8)));
    const [together] = await Promise.all([
      scheduler.submit(job("alone", 3, 8)),
      ...Array.from({ length: 6 }, (_, i) => scheduler.submit(job(`other-${i}`, i, 5 + i))),
      scheduler.submit(job("base", null, 4)),
    ]);
    expect(done(together!).tokens.map((t) => t.token)).toEqual(alone.tokens.map((t) => t.token));
  });

  it("finishes a short request sent while a long one runs first", async () => {
    const { scheduler } = await setUp();
    const order: string[] = [];
    let short: Promise<Outcome> | undefined;
    const long = scheduler
      .submit(
        job("long", 1, 60, {
          onToken: () => {
            short ??= scheduler.submit(job("short", 2, 3)).then((o) => {
              order.push("short");
              return o;
            });
          },
        }),
      )
      .then((o) => {
        order.push("long");
        return o;
      });
    await long;
    await short;
    expect(order).toEqual(["short", "long"]);
  });

  it("lets a cold adapter in within a bounded wait while a hot adapter's queue stays full", async () => {
    const { scheduler } = await setUp({ maxAdaptersPerStep: 1, maxBatch: 2, adapterQuantumSteps: 4 });
    const finished: string[] = [];
    const track = (p: Promise<Outcome>, id: string) => p.then(() => finished.push(id));
    const hot = Array.from({ length: 12 }, (_, i) =>
      track(scheduler.submit(job(`hot-${i}`, 0, 6)), `hot-${i}`),
    );
    const cold = track(scheduler.submit(job("cold", 2, 6)), "cold");
    await Promise.all([...hot, cold]);
    // Without the quantum the hot adapter would keep its place until its queue ran dry.
    expect(finished.indexOf("cold")).toBeLessThan(8);
  });

  it("takes turns across orgs, so one org's backlog does not starve another's request", async () => {
    const { scheduler } = await setUp({ maxBatch: 1 });
    const finished: string[] = [];
    const busy = Array.from({ length: 8 }, (_, i) =>
      scheduler.submit({ ...job(`busy-${i}`, null, 3), org: "busy" }).then(() => finished.push(`busy-${i}`)),
    );
    const other = scheduler
      .submit({ ...job("other", null, 3), org: "other" })
      .then(() => finished.push("other"));
    await Promise.all([...busy, other]);
    expect(finished.indexOf("other")).toBeLessThanOrEqual(1);
  });

  it("admits a live request before batch lines queued ahead of it, on its adapter or another", async () => {
    const { scheduler } = await setUp({ maxBatch: 1 });
    const finished: string[] = [];
    const run = (j: Job) => scheduler.submit(j).then(() => finished.push(j.id));
    const all = [
      ...[0, 1, 2].map((i) => run(job(`batch-a-${i}`, 1, 2, { batch: true }))),
      ...[0, 1, 2].map((i) => run(job(`batch-b-${i}`, 3, 2, { batch: true }))),
      run(job("live-a", 1, 2)),
      run(job("live-b", 3, 2)),
    ];
    await Promise.all(all);
    expect(finished.slice(0, 2).sort()).toEqual(["live-a", "live-b"]);
    // Batch lines keep their own order.
    expect(finished.filter((id) => id.startsWith("batch-a"))).toEqual([
      "batch-a-0",
      "batch-a-1",
      "batch-a-2",
    ]);
  });

  it("gives a free adapter place to an adapter a live request waits for before one only batch lines want", async () => {
    const { scheduler } = await setUp({ maxAdaptersPerStep: 1, maxBatch: 2 });
    const finished: string[] = [];
    const run = (j: Job) => scheduler.submit(j).then(() => finished.push(j.id));
    const all = [
      ...[0, 1, 2, 3].map((i) => run(job(`hot-${i}`, 0, 3, { batch: true }))),
      ...[0, 1].map((i) => run(job(`cold-batch-${i}`, 2, 3, { batch: true }))),
      run(job("cold-live", 4, 3)),
    ];
    await Promise.all(all);
    // Adapter 2 started waiting first; the live request's adapter 4 still gets the place first.
    expect(finished.indexOf("cold-live")).toBeLessThan(finished.indexOf("cold-batch-0"));
  });

  it("admits a priority request before live requests and batch lines queued ahead of it, on its adapter or another", async () => {
    const { scheduler } = await setUp({ maxBatch: 1 });
    const finished: string[] = [];
    const run = (j: Job) => scheduler.submit(j).then(() => finished.push(j.id));
    const all = [
      run(job("batch-a", 1, 2, { batch: true })),
      ...[0, 1].map((i) => run(job(`live-a-${i}`, 1, 2))),
      run(job("live-b", 3, 2)),
      run(job("priority-a", 1, 2, { priority: true })),
      run(job("priority-b", 3, 2, { priority: true })),
    ];
    await Promise.all(all);
    // The priority requests first, then the live ones (each adapter's in their order), the batch line last.
    expect(finished.slice(0, 2).sort()).toEqual(["priority-a", "priority-b"]);
    expect(finished.at(-1)).toBe("batch-a");
    expect(finished.filter((id) => id.startsWith("live-a"))).toEqual(["live-a-0", "live-a-1"]);
  });

  it("gives a free adapter place to an adapter a priority request waits for before one live requests want", async () => {
    const { scheduler } = await setUp({ maxAdaptersPerStep: 1, maxBatch: 2 });
    const finished: string[] = [];
    const run = (j: Job) => scheduler.submit(j).then(() => finished.push(j.id));
    const all = [
      ...[0, 1, 2, 3].map((i) => run(job(`hot-${i}`, 0, 3))),
      ...[0, 1].map((i) => run(job(`cold-live-${i}`, 2, 3))),
      run(job("cold-priority", 4, 3, { priority: true })),
    ];
    await Promise.all(all);
    // Adapter 2 started waiting first; the priority request's adapter 4 still gets the place first.
    expect(finished.indexOf("cold-priority")).toBeLessThan(finished.indexOf("cold-live-0"));
  });

  it("stops a cancelled sequence at the next step and reports only the tokens it generated", async () => {
    const { scheduler, engine } = await setUp();
    let seen = 0;
    const outcome = done(
      await scheduler.submit(
        job("cancel-me", 4, 100, {
          onToken: () => {
            seen++;
            if (seen === 3) scheduler.cancel("cancel-me");
          },
        }),
      ),
    );
    expect(outcome.finishReason).toBe("cancelled");
    expect(outcome.tokens).toHaveLength(3);
    expect(engine.running).toBe(0);
  });

  it("cancels a queued job without running it", async () => {
    const { scheduler, adapters } = await setUp();
    const open = adapters.gate(ref(5).name);
    const pending = scheduler.submit(job("queued", 5, 4));
    scheduler.cancel("queued");
    open();
    const outcome = done(await pending);
    expect(outcome).toMatchObject({ finishReason: "cancelled", promptTokens: 0, tokens: [] });
  });

  it("prefills a step's prompts in one run, and a prompt cancelled while its run went on leaves unbilled", async () => {
    const { scheduler, engine, adapters } = await setUp();
    const prefills: number[] = [];
    const prefillTogether = engine.prefillTogether.bind(engine);
    engine.prefillTogether = (prompts) => {
      prefills.push(prompts.length);
      return prefillTogether(prompts);
    };
    // Same adapter, prompts of 4 tokens: one batch, "first" taking its first token before "second" does.
    const first = scheduler.submit(job("first", 3, 4, { onToken: () => scheduler.cancel("second") }));
    const second = scheduler.submit(job("second", 3, 4));
    const third = scheduler.submit(job("third", 1, 4));
    const [a, b, c] = (await Promise.all([first, second, third])).map(done);
    expect(prefills).toEqual([3]);
    expect(a).toMatchObject({ finishReason: "length", promptTokens: 4 });
    expect(c).toMatchObject({ finishReason: "length", promptTokens: 4 });
    expect(b).toMatchObject({ finishReason: "cancelled", promptTokens: 0, tokens: [] });
    await scheduler.idle();
    // The cancelled prompt never decoded: only the other two generated.
    expect(scheduler.tokensGenerated).toBe(8);
    expect(engine.running).toBe(0);
    expect(adapters.held).toBe(0);
  });

  it("does not prefill a prompt cancelled while an earlier batch of its step ran", async () => {
    const { scheduler, engine } = await setUp();
    const prefills: number[][] = [];
    const prefillTogether = engine.prefillTogether.bind(engine);
    engine.prefillTogether = (prompts) => {
      prefills.push(prompts.map((p) => p.tokens.length));
      return prefillTogether(prompts);
    };
    // 40 tokens and 4: too far apart to pad into one batch, so the long one's batch runs first.
    const long = scheduler.submit(
      job("long", 3, 4, {
        promptTokens: Array.from({ length: 40 }, (_, i) => 40 + i),
        onToken: () => scheduler.cancel("short"),
      }),
    );
    const short = scheduler.submit(job("short", 3, 4));
    const [l, s] = (await Promise.all([long, short])).map(done);
    expect(prefills).toEqual([[40]]);
    expect(l).toMatchObject({ finishReason: "length", promptTokens: 40 });
    expect(s).toMatchObject({ finishReason: "cancelled", promptTokens: 0, tokens: [] });
    await scheduler.idle();
    expect(engine.running).toBe(0);
  });

  it("prefills a prompt longer than a step's budget in chunks while the running sequences go on, with the tokens one run gives", async () => {
    const longPrompt = Array.from({ length: 100 }, (_, i) => 40 + ((7 * i) % 50));
    const reference = await setUp();
    const alone = done(await reference.scheduler.submit(job("long", 2, 5, { promptTokens: longPrompt })));

    const { scheduler, engine, steps } = await setUp({ stepTokenBudget: 40 });
    const pieces: { size: number; more: boolean; runnerTokens: number }[] = [];
    let runnerTokens = 0;
    const prefillTogether = engine.prefillTogether.bind(engine);
    engine.prefillTogether = (prompts) => {
      for (const p of prompts)
        if (p.id === "long") pieces.push({ size: p.tokens.length, more: p.more === true, runnerTokens });
      return prefillTogether(prompts);
    };
    let long: Promise<Outcome> | undefined;
    const runner = scheduler.submit(
      job("runner", 1, 30, {
        onToken: () => {
          runnerTokens++;
          if (runnerTokens === 2) long = scheduler.submit(job("long", 2, 5, { promptTokens: longPrompt }));
        },
      }),
    );
    await runner;
    const chunked = done(await long!);
    // One sequence running: 39 prompt tokens a step, the last piece what is left; the runner decoded a
    // token in every step in between.
    expect(pieces.map((p) => [p.size, p.more])).toEqual([
      [39, true],
      [39, true],
      [22, false],
    ]);
    const first = pieces[0]!.runnerTokens;
    expect(pieces.map((p) => p.runnerTokens)).toEqual([first, first + 1, first + 2]);
    expect(Math.max(...steps.map((s) => s.sequences))).toBe(2);
    expect(chunked.promptTokens).toBe(100);
    expect(chunked.tokens.map((t) => t.token)).toEqual(alone.tokens.map((t) => t.token));
  });

  it("prefills batch lines within a quarter of a step's budget, and live prompts up to all of it", async () => {
    const prompt = (i: number) => Array.from({ length: 60 }, (_, t) => 50 + 13 * i + t);
    const firstStep = async (batch: boolean) => {
      const { scheduler, engine } = await setUp({ stepTokenBudget: 256 });
      const prefills = vi.spyOn(engine, "prefillTogether");
      await Promise.all(
        [0, 1, 2, 3].map((i) =>
          scheduler.submit(job(`p-${i}`, null, 2, { promptTokens: prompt(i), ...(batch ? { batch } : {}) })),
        ),
      );
      const [prompts] = prefills.mock.calls[0]!;
      return prompts.reduce((n, p) => n + p.tokens.length, 0);
    };
    // Four 60-token prompts: one batch line fits its 64-token share, while four live prompts go together.
    expect(await firstStep(true)).toBe(60);
    expect(await firstStep(false)).toBe(240);
  });

  it("counts only the tokens a prompt computes against the step budget: a cached long prompt goes in whole", async () => {
    const { scheduler, engine } = await setUp({ stepTokenBudget: 40, prefixCacheBytes: 1 << 20 });
    const pieces: [string, number, boolean][] = [];
    const prefillTogether = engine.prefillTogether.bind(engine);
    engine.prefillTogether = (prompts) => {
      for (const p of prompts) pieces.push([p.id, p.tokens.length, p.more === true]);
      return prefillTogether(prompts);
    };
    const longPrompt = Array.from({ length: 100 }, (_, i) => 40 + ((3 * i) % 50));
    const first = done(await scheduler.submit(job("first", 2, 2, { promptTokens: longPrompt })));
    const again = done(await scheduler.submit(job("again", 2, 2, { promptTokens: longPrompt })));
    // The first in chunks of the budget; the second's 96 cached tokens (six blocks) cost nothing, so its
    // 4 computed tokens fit one step.
    expect(pieces).toEqual([
      ["first", 40, true],
      ["first", 40, true],
      ["first", 20, false],
      ["again", 100, false],
    ]);
    expect([first.cachedPromptTokens, again.cachedPromptTokens]).toEqual([0, 96]);
    expect(again.tokens.map((t) => t.token)).toEqual(first.tokens.map((t) => t.token));
  });

  it("holds a prompt sharing a long prefix with one of its step back a step, to prefill only the rest", async () => {
    const { scheduler, engine } = await setUp({ prefixCacheBytes: 1 << 20 });
    const calls: string[][] = [];
    const prefillTogether = engine.prefillTogether.bind(engine);
    engine.prefillTogether = (prompts) => {
      calls.push(prompts.map((p) => `${p.id}:${p.tokens.length}`));
      return prefillTogether(prompts);
    };
    const shared = Array.from({ length: 80 }, (_, i) => 40 + ((7 * i) % 50));
    const prompt = (tail: number) => [...shared, 90 + tail, 91, 92];
    const short = (tail: number) => [...shared.slice(0, 40), 90 + tail, 91, 92];
    const outcomes = await Promise.all([
      // Three choices of one request (80 shared tokens: 5 blocks), and two prompts that share 40 (2 blocks).
      ...[0, 1, 2].map((i) => scheduler.submit(job(`choice-${i}`, 1, 3, { promptTokens: prompt(i) }))),
      ...[0, 1].map((i) => scheduler.submit(job(`short-${i}`, 3, 3, { promptTokens: short(i) }))),
    ]).then((all) => all.map(done));
    expect(outcomes.map((o) => o.cachedPromptTokens)).toEqual([0, 80, 80, 0, 0]);
    // The first choice and both short prompts in the first step; the other choices from its cache after.
    const callOf = (id: string) => calls.findIndex((call) => call.some((c) => c.startsWith(`${id}:`)));
    expect(callOf("short-0")).toBe(callOf("short-1"));
    expect(callOf("choice-1")).toBeGreaterThan(Math.max(callOf("choice-0"), callOf("short-0")));
    // Held back or not, each choice gets the tokens it gets alone.
    const { scheduler: alone } = await setUp();
    for (const i of [1, 2]) {
      const reference = done(await alone.submit(job(`choice-${i}`, 1, 3, { promptTokens: prompt(i) })));
      expect(outcomes[i]!.tokens.map((t) => t.token)).toEqual(reference.tokens.map((t) => t.token));
    }
  });

  it("fails as the caller's invalid request one whose allowed_token_ids and bad_words leave no token", async () => {
    const { scheduler } = await setUp();
    const [contradicted, plain] = await Promise.all([
      scheduler.submit(
        job("contradicted", 1, 4, {
          limits: { maxTokens: 4, stopTokenIds: [], allowedTokenIds: [65], badWordsIds: [[65]] },
        }),
      ),
      scheduler.submit(job("plain", 2, 4)),
    ]).then((all) => all.map(done) as [ReturnType<typeof done>, ReturnType<typeof done>]);
    expect(contradicted.finishReason).toBe("error");
    expect(contradicted.error).toMatchObject({ code: "invalid_request" });
    expect(contradicted.error?.message).toContain("allowed_token_ids and bad_words");
    expect(plain.finishReason).toBe("length");
  });

  it("fails as invalid a JSON answer whose stop_token_ids take every token the format needs next", async () => {
    const { scheduler } = await setUp();
    // The object's required key must open with a quote, and every token that is just a quote ends the answer.
    const quotes = tokenizer.encode('"', { addSpecialTokens: false });
    const json = compileJsonSchema({
      type: "object",
      properties: { ok: { type: "boolean" } },
      required: ["ok"],
      additionalProperties: false,
    });
    const outcome = done(
      await scheduler.submit(job("quoted", 1, 12, { limits: { maxTokens: 12, stopTokenIds: quotes, json } })),
    );
    expect(outcome.finishReason).toBe("error");
    expect(outcome.error).toMatchObject({ code: "invalid_request" });
    expect(outcome.error?.message).toContain("stop_token_ids");
  });

  it("never ends a constrained answer unfinished on a stop_token_id the pattern takes as text", async () => {
    const { scheduler } = await setUp();
    // The pattern must open with a quote, and the quote ends the answer: it is never drawn while the
    // answer is unfinished, so no token is left (the caller's contradiction), never an empty "stop".
    const quotes = tokenizer.encode('"', { addSpecialTokens: false });
    const outcome = done(
      await scheduler.submit(
        job("pattern", 1, 8, {
          sampling: { ...GREEDY, temperature: 1, seed: 3 },
          limits: { maxTokens: 8, stopTokenIds: quotes, regex: compileFullMatch('"a"') },
        }),
      ),
    );
    expect(outcome.tokens.map((t) => t.token)).not.toEqual(quotes);
    if (outcome.finishReason === "error") expect(outcome.error).toMatchObject({ code: "invalid_request" });
    else expect(tokenizer.decode(outcome.tokens.map((t) => t.token))).toBe('"a"');
  });

  it("fails only the sequence whose row cannot be sampled, and the others go on", async () => {
    const { scheduler, engine } = await setUp();
    const decodePicking = engine.decodePicking.bind(engine);
    let corrupted = 0;
    engine.decodePicking = async (tokens, choices) => {
      const rows = await decodePicking(tokens, choices);
      if (rows.has("bad") && corrupted++ === 1)
        rows.set("bad", new Float32Array(tokenizer.vocabSize).fill(Number.NaN));
      return rows;
    };
    const [bad, good] = await Promise.all([
      scheduler.submit(job("bad", 1, 6)),
      scheduler.submit(job("good", 2, 6)),
    ]).then((all) => all.map(done) as [ReturnType<typeof done>, ReturnType<typeof done>]);
    expect(bad.finishReason).toBe("error");
    expect(bad.error).toMatchObject({ code: "sampling_error" });
    expect(bad.error?.message).toContain("every logit is -inf or NaN");
    // Its first tokens were generated (and are billed); the other sequence finished as usual.
    expect(bad.tokens.length).toBe(2);
    expect(good.finishReason).toBe("length");
    expect(good.tokens).toHaveLength(6);
    expect(engine.running).toBe(0);
  });

  it("fails every job of a queue longer than a batch whose prefills all fail, and goes on with the queue", async () => {
    const { scheduler, engine } = await setUp();
    const prefillTogether = engine.prefillTogether.bind(engine);
    let failing = true;
    engine.prefillTogether = (prompts) =>
      failing
        ? Promise.reject(new Error("no tensor model.layers.0.q_proj.weight"))
        : prefillTogether(prompts);
    // More than a batch (16) fits at once: the jobs behind the first steps must not wait for a submit.
    const outcomes = (
      await Promise.all(Array.from({ length: 40 }, (_, i) => scheduler.submit(job(`f${i}`, null, 2))))
    ).map(done);
    for (const outcome of outcomes) {
      expect(outcome.finishReason).toBe("error");
      expect(outcome.error?.message).toContain("prefill failed: no tensor");
    }
    failing = false;
    expect(done(await scheduler.submit(job("after", null, 2))).tokens).toHaveLength(2);
  });

  it("releases a long prompt cancelled between its chunks, unbilled and never decoded", async () => {
    let steps = 0;
    const { scheduler, engine } = await setUp({
      stepTokenBudget: 40,
      // Between steps, after the second chunk ran: the scheduler learns of it at its next step.
      onStep: () => {
        if (++steps === 2) scheduler.cancel("long");
      },
    });
    const sizes: number[] = [];
    const prefillTogether = engine.prefillTogether.bind(engine);
    engine.prefillTogether = (prompts) => {
      sizes.push(...prompts.map((p) => p.tokens.length));
      return prefillTogether(prompts);
    };
    // The base model: no adapter slot keeps the scheduler's loop going after the cancel settled the job.
    const outcome = done(
      await scheduler.submit(
        job("long", null, 5, { promptTokens: Array.from({ length: 120 }, (_, i) => 40 + (i % 50)) }),
      ),
    );
    expect(outcome).toMatchObject({ finishReason: "cancelled", promptTokens: 0, tokens: [] });
    await vi.waitFor(() => expect(engine.running).toBe(0));
    expect(sizes).toEqual([40, 40]);
    expect(scheduler.tokensGenerated).toBe(0);
  });

  it("reports the prompt tokens the engine's prefix cache covered, per job, never across orgs", async () => {
    const { scheduler } = await setUp({ prefixCacheBytes: 1 << 20 });
    const shared = Array.from({ length: 36 }, (_, i) => 40 + i);
    const first = done(await scheduler.submit(job("first", 2, 2, { promptTokens: [...shared, 90, 91] })));
    const second = done(await scheduler.submit(job("second", 2, 2, { promptTokens: [...shared, 92] })));
    const otherAdapter = done(await scheduler.submit(job("other", 3, 2, { promptTokens: [...shared, 92] })));
    const otherOrg = done(
      await scheduler.submit(job("tenant", 2, 2, { org: "org-elsewhere", promptTokens: [...shared, 93] })),
    );
    expect(
      [first, second, otherAdapter, otherOrg].map((o) => [o.promptTokens, o.cachedPromptTokens]),
    ).toEqual([
      [38, 0],
      [37, 32],
      [37, 0],
      [37, 0],
    ]);
  });

  it("runs the batch while an adapter loads, and a failed load fails only its own requests", async () => {
    const { scheduler, adapters } = await setUp();
    const open = adapters.gate(ref(6).name);
    adapters.failWith(ref(6).name, new Error("blob adapter-6 not found"));
    let runningWhileLoading = 0;
    const warm = scheduler.submit(job("warm", 1, 20, { onToken: () => runningWhileLoading++ }));
    const broken = [scheduler.submit(job("broken-a", 6, 4)), scheduler.submit(job("broken-b", 6, 4))];
    await new Promise((resolve) => setTimeout(resolve, 20));
    open();
    for (const outcome of await Promise.all(broken)) {
      expect(done(outcome).finishReason).toBe("error");
      expect(done(outcome).error?.code).toBe("adapter_unavailable");
      expect(done(outcome).error?.message).toContain("blob adapter-6 not found");
    }
    expect(done(await warm).finishReason).toBe("length");
    expect(runningWhileLoading).toBe(20);
    expect(adapters.acquires.filter((a) => a === ref(6).name)).toHaveLength(1);
  });

  it("waits for a slot when every slot is in use, then runs", async () => {
    const { scheduler, adapters } = await setUp();
    adapters.refuse(2);
    const outcome = done(await scheduler.submit(job("patient", 7, 3)));
    expect(outcome.finishReason).toBe("length");
    expect(adapters.acquires.filter((a) => a === ref(7).name)).toHaveLength(3);
  });

  it("fails a deleted adapter's queued and running jobs and keeps the others", async () => {
    const { scheduler, adapters } = await setUp();
    const gone = new JobError("model_not_found", "adapter org-1/adapter-3 was deleted");
    let failed = false;
    const running = scheduler.submit(
      job("running", 3, 50, {
        onToken: () => {
          if (failed) return;
          failed = true;
          scheduler.failAdapter(ref(3).name, gone);
        },
      }),
    );
    const queued = scheduler.submit(job("queued", 3, 5));
    const other = scheduler.submit(job("other", 2, 5));
    const [r, q, o] = (await Promise.all([running, queued, other])).map(done);
    expect(r!.finishReason).toBe("error");
    expect(r!.error).toBe(gone);
    expect(r!.tokens.length).toBeLessThanOrEqual(2);
    expect(q).toMatchObject({ finishReason: "error", promptTokens: 0 });
    expect(o!.finishReason).toBe("length");
    expect(adapters.held).toBe(0);
  });

  it("hands back queued jobs and lets running ones finish", async () => {
    const { scheduler } = await setUp({ maxBatch: 1 });
    let handed: string[] = [];
    const first = scheduler.submit(
      job("first", null, 5, {
        onToken: () => {
          if (handed.length === 0) handed = scheduler.handBack();
        },
      }),
    );
    const second = scheduler.submit(job("second", null, 5));
    const third = scheduler.submit(job("third", 1, 5));
    expect(done(await first).finishReason).toBe("length");
    expect(await second).toEqual({ kind: "handed-back" });
    expect(await third).toEqual({ kind: "handed-back" });
    expect(handed.sort()).toEqual(["second", "third"]);
    await scheduler.idle();
  });

  it("keeps a prompt whose chunks have begun when queued jobs are handed back, and finishes and bills it", async () => {
    let steps = 0;
    let handed: string[] = [];
    const { scheduler } = await setUp({
      stepTokenBudget: 40,
      // After the long prompt's first chunk: a draining worker hands back what has not started.
      onStep: () => {
        if (++steps === 1) handed = scheduler.handBack();
      },
    });
    const long = scheduler.submit(
      job("long", null, 3, { promptTokens: Array.from({ length: 100 }, (_, i) => 40 + (i % 50)) }),
    );
    const queued = scheduler.submit(job("queued", null, 3));
    const outcome = done(await long);
    expect(handed).toEqual(["queued"]);
    expect(await queued).toEqual({ kind: "handed-back" });
    expect(outcome).toMatchObject({ finishReason: "length", promptTokens: 100 });
    expect(outcome.tokens).toHaveLength(3);
  });

  it("refuses a prompt that leaves no room in the context, naming the sizes", async () => {
    const { scheduler } = await setUp();
    const outcome = done(
      await scheduler.submit(job("huge", null, 4, { promptTokens: new Array(128).fill(5) })),
    );
    expect(outcome.error?.code).toBe("context_length_exceeded");
    expect(outcome.error?.message).toContain("128");
  });
});

// A preempted line's cache parked in the engine (onnxruntime), or released and prefilled again (CUDA).
describe.each([
  { mode: "parked", parks: true },
  { mode: "prefilled again", parks: false },
  { mode: "prefilled again after a failed park", parks: "fails" as const },
])("preempting batch lines for live requests: cache $mode", ({ parks }) => {
  // A batch line sampled at temperature with a seed and penalties: a preemption must leave its tokens as
  // they were, which only holds if the sampler's state survives it.
  const SAMPLED: Partial<Job> = {
    batch: true,
    sampling: { ...GREEDY, temperature: 0.9, seed: 7, presencePenalty: 0.5, repetitionPenalty: 1.2 },
  };

  /** Tokens of jobs run to the end with nothing else queued: what a preempted line must still produce. */
  async function uninterrupted(jobs: Job[]): Promise<number[][]> {
    const { scheduler } = await setUp({ parks });
    const outcomes = await Promise.all(jobs.map((j) => scheduler.submit(j)));
    return outcomes.map((o) => done(o).tokens.map((t) => t.token));
  }

  it("preempts a running batch line for a live request when the batch is full; the line then goes on where it stopped", async () => {
    const lines = [job("line-greedy", 1, 24, { batch: true }), job("line-sampled", 3, 24, SAMPLED)];
    const expected = await uninterrupted(lines);
    const preempted: string[] = [];
    const { scheduler, engine } = await setUp({ parks, maxBatch: 2, onPreempt: (id) => preempted.push(id) });
    const prefills = vi.spyOn(engine, "prefillTogether");
    const finished: string[] = [];
    const streamed = new Map<string, string>();
    let live: Promise<Outcome> | undefined;
    const run = (j: Job) =>
      scheduler
        .submit({
          ...j,
          onToken: (token, text) => {
            streamed.set(j.id, (streamed.get(j.id) ?? "") + text);
            // The batch is full (both lines run) when the live request arrives.
            if (j.id === "line-sampled" && token && (streamed.get(j.id)?.length ?? 0) > 0)
              live ??= run(job("live", 2, 3));
          },
        })
        .then((o) => {
          finished.push(j.id);
          return done(o);
        });
    const outcomes = await Promise.all(lines.map(run));
    await live;
    expect(preempted).toHaveLength(1);
    expect(finished[0]).toBe("live");
    // A parked line rejoins without a prefill; otherwise it prefills its prompt and tokens again.
    const prefilledTimes = prefills.mock.calls.filter(([prompts]) =>
      prompts.some((p) => p.id === preempted[0]),
    ).length;
    expect(prefilledTimes).toBe(parks === true ? 1 : 2);
    expect(outcomes.map((o) => o.tokens.map((t) => t.token))).toEqual(expected);
    for (const [i, outcome] of outcomes.entries()) {
      expect(outcome.finishReason).toBe("length");
      // Billed once for its prompt; every token went out once.
      expect(outcome.promptTokens).toBe(4);
      expect(streamed.get(lines[i]!.id)).toBe(outcome.text);
    }
    expect(engine.running).toBe(0);
  });

  it("never preempts a live request, and does not preempt for a batch line", async () => {
    const preempted: string[] = [];
    const { scheduler } = await setUp({ parks, maxBatch: 2, onPreempt: (id) => preempted.push(id) });
    let late: Promise<Outcome>[] = [];
    const first = scheduler.submit(
      job("live-long", 1, 16, {
        onToken: () => {
          if (late.length === 0)
            late = [
              scheduler.submit(job("live-late", 2, 3)),
              scheduler.submit(job("batch-late", 3, 3, { batch: true })),
            ];
        },
      }),
    );
    const second = scheduler.submit(job("batch-running", 0, 16, { batch: true }));
    await Promise.all([first, second]);
    await Promise.all(late);
    // live-late preempted batch-running; batch-late waited, and nothing preempted live-long.
    expect(preempted).toEqual(["batch-running"]);
  });

  it("gives a place held only by batch lines to a live request's adapter at once, preempting those lines", async () => {
    const lines = [0, 1].map((i) => job(`hot-line-${i}`, 0, 30, i === 0 ? { batch: true } : SAMPLED));
    const expected = await uninterrupted(lines);
    const preempted: string[] = [];
    const { scheduler, adapters } = await setUp({
      parks,
      maxAdaptersPerStep: 1,
      maxBatch: 4,
      onPreempt: (id) => preempted.push(id),
    });
    const finished: string[] = [];
    let live: Promise<unknown> | undefined;
    const outcomes = await Promise.all(
      lines.map((line) =>
        scheduler
          .submit({
            ...line,
            onToken: () => {
              live ??= scheduler.submit(job("cold-live", 4, 3)).then(() => finished.push("cold-live"));
            },
          })
          .then((o) => {
            finished.push(line.id);
            return done(o);
          }),
      ),
    );
    await live;
    // Without preemption the live request would wait for the adapter's quantum and both 30-token lines.
    expect(finished[0]).toBe("cold-live");
    expect(preempted.sort()).toEqual(["hot-line-0", "hot-line-1"]);
    expect(outcomes.map((o) => o.tokens.map((t) => t.token))).toEqual(expected);
    expect(adapters.held).toBe(0);
  });

  it("keeps a preempted line when the worker hands back what has not started, and bills a cancelled one for what it ran", async () => {
    const { scheduler } = await setUp({ parks, maxBatch: 1 });
    let handedBack: string[] = [];
    let live: Promise<Outcome> | undefined;
    const kept = scheduler.submit(
      job("kept", 1, 12, {
        batch: true,
        onToken: () => {
          live ??= scheduler.submit(
            job("live", 2, 3, {
              onToken: () => {
                // "kept" waits preempted now; "fresh" never ran.
                if (handedBack.length === 0) handedBack = scheduler.handBack();
              },
            }),
          );
        },
      }),
    );
    const fresh = scheduler.submit(job("fresh", 1, 3, { batch: true }));
    expect(await fresh).toEqual({ kind: "handed-back" });
    expect(handedBack).toEqual(["fresh"]);
    const outcome = done(await kept);
    expect(outcome.tokens).toHaveLength(12);
    await live;

    const { scheduler: other } = await setUp({ parks, maxBatch: 1 });
    let generated = 0;
    const cancelled = other.submit(
      job("cancelled", 1, 40, {
        batch: true,
        onToken: () => {
          generated++;
          if (generated === 2)
            void other.submit(job("live", 2, 3, { onToken: () => other.cancel("cancelled") }));
        },
      }),
    );
    const ended = done(await cancelled);
    expect(ended.finishReason).toBe("cancelled");
    expect(ended.promptTokens).toBe(4);
    expect(ended.tokens.length).toBeGreaterThanOrEqual(2);
    expect(ended.tokens.length).toBeLessThan(40);
  });
});

describe("prompt logprobs", () => {
  const prompt = Array.from({ length: 100 }, (_, i) => 40 + ((11 * i) % 60));
  const TOP = 3;

  /** Each prompt token's logprob after the first, from one prefill of the whole prompt on adapter 2. */
  async function fromOnePrefill(): Promise<PromptTokenLogprob[]> {
    const { engine, adapters } = await setUp();
    const slot = await adapters.acquire(ref(2));
    const rows = await engine.prefill("whole", prompt, slot, true);
    return rows.slice(0, -1).map((row, k) => promptTokenLogprob(row, prompt[k + 1]!, TOP));
  }

  function expectSameScores(got: PromptTokenLogprob[], want: PromptTokenLogprob[]) {
    expect(got).toHaveLength(prompt.length - 1);
    for (const [k, entry] of got.entries()) {
      const reference = want[k]!;
      expect(entry.token).toBe(prompt[k + 1]);
      expect(entry.rank).toBe(reference.rank);
      expect(entry.logprob).toBeCloseTo(reference.logprob, 4);
      expect(entry.top.map((t) => t.token)).toEqual(reference.top.map((t) => t.token));
    }
  }

  it("scores every prompt token after the first, in order and before the first token, as one prefill does", async () => {
    const want = await fromOnePrefill();
    const { scheduler } = await setUp();
    const events: string[] = [];
    const scored: PromptTokenLogprob[] = [];
    const outcome = done(
      await scheduler.submit(
        job("scored", 2, 4, {
          promptTokens: prompt,
          promptLogprobs: TOP,
          onPromptLogprobs: (entries) => {
            events.push("prompt");
            scored.push(...entries);
          },
          onToken: () => events.push("token"),
        }),
      ),
    );
    expectSameScores(scored, want);
    expect(events).toEqual(["prompt", "token", "token", "token", "token"]);
    const plain = done(await scheduler.submit(job("plain", 2, 4, { promptTokens: prompt })));
    expect(outcome.tokens.map((t) => t.token)).toEqual(plain.tokens.map((t) => t.token));
  });

  it("scores a long prompt in chunks while others decode, never from a stored prefix, and with max_tokens 0 only scores", async () => {
    const want = await fromOnePrefill();
    const { scheduler, engine } = await setUp({ stepTokenBudget: 40, prefixCacheBytes: 1 << 20 });
    // The same prompt on the same adapter and org first, so a stored prefix covers most of it.
    const first = done(await scheduler.submit(job("first", 2, 2, { promptTokens: prompt })));
    expect(first.promptTokens).toBe(prompt.length);
    const pieces: number[] = [];
    const prefillTogether = engine.prefillTogether.bind(engine);
    engine.prefillTogether = (prompts) => {
      for (const p of prompts) if (p.id === "scored") pieces.push(p.allLogits ? p.tokens.length : -1);
      return prefillTogether(prompts);
    };
    const scored: PromptTokenLogprob[] = [];
    const runner = scheduler.submit(job("runner", 1, 20));
    const outcome = done(
      await scheduler.submit(
        job("scored", 2, 0, {
          promptTokens: prompt,
          limits: { maxTokens: 0, stopTokenIds: [] },
          promptLogprobs: TOP,
          onPromptLogprobs: (entries) => scored.push(...entries),
        }),
      ),
    );
    expect(done(await runner).tokens).toHaveLength(20);
    expect(pieces.length).toBeGreaterThan(1);
    expect(pieces.every((n) => n > 0)).toBe(true);
    expect(pieces.reduce((a, b) => a + b, 0)).toBe(prompt.length);
    expectSameScores(scored, want);
    expect(outcome).toMatchObject({
      finishReason: "length",
      promptTokens: prompt.length,
      cachedPromptTokens: 0,
    });
    expect(outcome.tokens).toEqual([]);
    await scheduler.idle();
    expect(engine.running).toBe(0);
  });
});
