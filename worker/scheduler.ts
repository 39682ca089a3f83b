// The worker's scheduler: continuous batching of mixed-adapter sequences over one engine. Every step it
// retires cancelled and failed sequences, admits waiting ones (prompts taken within the step's token budget
// and prefilled together where their lengths are close, engine/prefill-batches.ts; a prompt longer than
// the budget leaves goes in chunks over several steps; one sharing a long prefix with a prompt of the step
// waits a step for that prefix's cache, MIN_SHARED_PREFIX) and runs one decode over everything running, so a
// short request never waits for a long one and a long prompt never stalls the running sequences.
//
// The engine decodes every running sequence in one run, so the adapters of the running set ARE the step's
// adapters: at most `maxAdaptersPerStep` adapters are active (acquired in a slot) at once. Requests queue per
// adapter; admission takes turns across orgs, then across each org's adapters, so a busy org or a hot adapter
// cannot starve the rest; priority-tier requests go before live ones, and live requests before batch lines,
// which ride spare capacity: a live (or priority) request
// that finds the batch full, or its adapter without a place while batch lines hold the places, preempts
// running batch lines: each waits again, its cache parked beside the batch (or, on an engine that cannot
// park, dropped, to prefill its prompt and what it generated again), and goes on where it stopped with the
// tokens it would have had. A request for an
// adapter that is not active waits for a place: places go in the order adapters started waiting (those
// wanted by a priority request first, then those wanted by a live one), and while one waits, the longest-active adapter that has had its quantum
// of steps stops admitting and leaves once its running sequences end. A cold adapter's wait is so bounded by
// the quantum plus the longest generation in flight. Loading never blocks a step: an adapter's acquire runs
// while the batch goes on, and its requests join at the first step after it resolves.
import type { AdapterRef, FinishReason } from "../schema/wire.ts";
import { AdapterRemovedError, NoFreeSlotError } from "./adapters/adapter-manager.ts";
import type { DecodeChoice, DecodeRow } from "./engine/decode-row.ts";
import type { PrefillPrompt } from "./engine/engine.ts";
import { NoTokenLeftError } from "./engine/no-token-left.ts";
import { prefillBatches } from "./engine/prefill-batches.ts";
import { PREFIX_BLOCK } from "./engine/prefix-cache.ts";
import { type PromptTokenLogprob, promptTokenLogprob } from "./engine/prompt-logprobs.ts";
import type { SampledToken, SamplingParams } from "./engine/sampler.ts";
import {
  type Accepted,
  decodeChoices,
  type SequenceLimits,
  SequenceOutput,
} from "./engine/sequence-output.ts";
import type { Tokenizer } from "./engine/tokenizer.ts";

/** The engine calls the scheduler makes; Engine, EngineThread and CudaEngine all provide them. */
export interface SchedulerEngine {
  /** ServingEngine.padsPrefills: whether prompts of very different lengths should go in separate runs. */
  readonly padsPrefills: boolean;
  /** ServingEngine.prefixReadyAfterPrefill: a prompt sharing a prefilled prompt's prefix may wait a step for it. */
  readonly prefixReadyAfterPrefill: boolean;
  /** Prompts of any lengths, or chunks of them, in one call; each one's last-token logits, in order (ServingEngine). */
  prefillTogether(prompts: readonly PrefillPrompt[]): Promise<Float32Array[]>;
  /** See ServingEngine.decodePicking and logitsOf. */
  decodePicking(
    tokens: ReadonlyMap<string, number>,
    choices: ReadonlyMap<string, DecodeChoice>,
  ): Promise<Map<string, DecodeRow>>;
  logitsOf(id: string): Float32Array | Promise<Float32Array>;
  release(id: string): Promise<void> | void;
  /** ServingEngine.park and resume; without them a preempted sequence is released and prefilled again. */
  park?(id: string): Promise<void>;
  resume?(id: string, slot: number): Promise<void> | void;
  /** ServingEngine.reusedPromptTokens. */
  reusedPromptTokens(ids: readonly string[]): number[] | Promise<number[]>;
  /** ServingEngine.cachedPrefixLength. */
  cachedPrefixLength(
    prompt: Pick<PrefillPrompt, "tokens" | "slot" | "prefixScope">,
  ): number | Promise<number>;
}

/** What the scheduler needs of the adapter tiers; worker/adapters/adapter-manager.ts provides it. */
export interface AdapterSlots {
  /** Starts bringing the adapter towards a slot; returns at once. */
  prefetch(ref: AdapterRef): void;
  /**
   * The slot holding the adapter, which stays there until release. Rejects with NoFreeSlotError while
   * every slot is in use (the scheduler tries again after it releases one), AdapterRemovedError for a
   * deleted adapter, any other error when it cannot be loaded.
   */
  acquire(ref: AdapterRef): Promise<number>;
  release(ref: AdapterRef): void;
}

export interface SchedulerOptions {
  /** Most sequences running at once. */
  maxBatch: number;
  /** Longest sequence, prompt + generated, the engine holds. */
  maxContext: number;
  /**
   * Tokens one step may process: one per running sequence plus the prompt tokens prefilled (not those a
   * stored prefix covers: the engine's prefix cache). A prompt longer than what a step has left goes in
   * chunks over several steps (one such prompt at a time), so a long prompt never stalls the running
   * sequences for longer than one budget's worth of work. A step's first prompt work gets at least
   * MIN_PREFILL_CHUNK tokens, so prompts move on however many sequences run.
   */
  stepTokenBudget: number;
  /** Distinct adapters in one step (the engine's limit, at most its slots). */
  maxAdaptersPerStep: number;
  /** Steps an adapter keeps admitting before it gives way to an adapter waiting for a place; default 16. */
  adapterQuantumSteps?: number;
  onStep?: (step: StepReport) => void;
  /** A running batch line was taken out of the batch for live requests (it runs again later). */
  onPreempt?: (jobId: string) => void;
}

export interface StepReport {
  seconds: number;
  /** Sequences that ran in the step (prefilled or decoded). */
  sequences: number;
  /** Distinct adapters among them; base-model rows count for none. */
  distinctAdapters: number;
  /** Tokens generated in the step. */
  tokens: number;
}

export interface Job {
  id: string;
  org: string;
  /** null: the base model. */
  adapter: AdapterRef | null;
  promptTokens: readonly number[];
  sampling: SamplingParams;
  /** limits.maxTokens 0: the prompt runs (for its prompt logprobs) and the job ends "length" with no token. */
  limits: Omit<SequenceLimits, "maxContext">;
  /**
   * Prompt logprobs (engine/prompt-logprobs.ts) with this many alternatives: each prompt token's but the
   * first, given the tokens before it, go to onPromptLogprobs in prompt order before the first generated
   * token. Such a prompt prefills in full (no stored prefix: its positions would have no logits), in
   * pieces of at most PROMPT_LOGPROBS_CHUNK tokens. Absent: none.
   */
  promptLogprobs?: number;
  onPromptLogprobs?: (entries: PromptTokenLogprob[]) => void;
  /**
   * A Batch API line or a request at the flex service tier (InferenceRequest.batch): it rides spare
   * capacity. A queued live request is admitted before any queued batch line, and an adapter wanted by live
   * requests gets a free place first.
   */
  batch?: boolean;
  /**
   * A request at the priority service tier (InferenceRequest.priority): admitted before any queued live
   * request or batch line, and its adapter gets a free place before theirs. Never with batch.
   */
  priority?: boolean;
  /**
   * Each generated token except a stop token, with the text it completes ("" while a character or a
   * possible stop string is incomplete); at the end, once with token null, text that was still held back.
   */
  onToken?: (token: SampledToken | null, text: string) => void;
}

/** Why a job failed: `code` is the OpenAI-style error code the reply carries. */
export class JobError extends Error {
  override readonly name = "JobError";
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export type Outcome =
  | {
      kind: "done";
      finishReason: FinishReason;
      /** Set when finishReason is "error". */
      error?: JobError;
      /** Prompt tokens the engine processed: 0 when the job never reached a prefill. */
      promptTokens: number;
      /** Of promptTokens, those a stored prefix's cache covered (not prefilled). */
      cachedPromptTokens: number;
      tokens: SampledToken[];
      text: string;
    }
  /** Taken back before it was prefilled (see handBack): nothing went out, it may run elsewhere. */
  | { kind: "handed-back" };

/** The outcome of a job that ended before any of it ran: no prompt token processed, nothing generated. */
export function unrunOutcome(finishReason: FinishReason, error?: JobError): Outcome {
  return {
    kind: "done",
    finishReason,
    ...(error ? { error } : {}),
    promptTokens: 0,
    cachedPromptTokens: 0,
    tokens: [],
    text: "",
  };
}

interface Entry {
  job: Job;
  group: Group;
  output: SequenceOutput;
  /** What a prefill gives the engine: the prompt; after a preemption, the prompt and the tokens generated. */
  feed: readonly number[];
  /** Tokens of `feed` in the engine's cache so far: a long prompt goes in chunks. */
  fed: number;
  /** Of the prompt, the tokens the engine's prefix cache covered; known once the prompt is in. */
  cached: number;
  /** The whole feed is in: the sequence runs (decodes). */
  prefilled: boolean;
  /** The prompt went in whole once (it is billed, and what it generated went out): set at the first prefill. */
  started: boolean;
  /** Preempted with its cache parked in the engine: it rejoins the batch without a prefill. */
  parked: boolean;
  /** Set while running: the sequence leaves at the next step with this ending. */
  ending: { reason: "cancelled" } | { reason: "error"; error: JobError } | null;
  resolve: (outcome: Outcome) => void;
}

type GroupState = "idle" | "acquiring" | "active" | "draining";

/** The queue and running sequences of one adapter (or one org's base-model requests). */
interface Group {
  key: string;
  org: string;
  adapter: AdapterRef | null;
  queue: Entry[];
  running: number;
  state: GroupState;
  slot: number;
  /** The step at which the adapter became active. */
  activeSince: number;
  /** Order among adapters waiting for a place: when this one started waiting. */
  waitingSince: number;
  /** Set by failAdapter while an acquire is in flight: release it as soon as it resolves. */
  doomed: boolean;
}

const SLOT_RETRY_MS = 20;

/** Fewest prompt tokens a step's first prefill takes, even when the running sequences use up the budget. */
export const MIN_PREFILL_CHUNK = 32;

/**
 * The share of a step's token budget that batch lines' prompts may take (a step's first prompt work always
 * gets MIN_PREFILL_CHUNK): a wave of lines arriving together is prefilled over several short steps, not one
 * long one that every live request arriving meanwhile waits behind.
 */
export const BATCH_PREFILL_SHARE = 0.25;

/**
 * A prompt that shares at least this many tokens (whole prefix-cache blocks) beyond what the cache already
 * covers with a prompt this step prefills (of the same org, on the same adapter: n choices of one request,
 * or one system prompt in a burst) waits a step and then prefills only the rest from that prompt's cache.
 * Below it the repeated prefill costs less than the batch-1 run a continued prompt needs (bench-1b on CPU,
 * 2 threads, 4–8 prompts: even at 48 shared tokens, 1.5× faster at 112, 2.3× at 252, 3.9× at 508).
 */
export const MIN_SHARED_PREFIX = 64;

/**
 * Most prompt tokens a step prefills of a prompt that wants prompt logprobs: each of its positions' whole
 * row of logits comes back from the engine, so this bounds that memory (256 × a 128k vocabulary in
 * float32 is 128 MiB).
 */
export const PROMPT_LOGPROBS_CHUNK = 256;

/** One step's prefill work for an entry: its whole prompt, the rest of it, or its next chunk. */
interface PrefillWork {
  entry: Entry;
  tokens: readonly number[];
  /** More of the prompt follows in a later step. */
  more: boolean;
  /** Of tokens, those the step computes: the rest a stored prefix covers. */
  cost: number;
}

/** How many tokens two prompts have in common from the start. */
function sharedPrefixLength(a: readonly number[], b: readonly number[]): number {
  const end = Math.min(a.length, b.length);
  let i = 0;
  while (i < end && a[i] === b[i]) i++;
  return i;
}

/** Whether the entry's next prefill must return every position's logits: its prompt logprobs are still to go out. */
function wantsPromptLogprobs(entry: Entry): boolean {
  return entry.job.promptLogprobs !== undefined && !entry.started;
}

/** The order jobs are served in: priority-tier requests, then live requests, then batch lines. */
const PRIORITY = 0;
const LIVE = 1;
const BATCH = 2;

function classOf(job: Job): number {
  return job.priority ? PRIORITY : job.batch ? BATCH : LIVE;
}

/** The class of the job first in a group's queue (BATCH for an empty queue: it asks for nothing). */
function headClass(group: Group): number {
  const head = group.queue[0];
  return head ? classOf(head.job) : BATCH;
}

function groupKey(org: string, adapter: AdapterRef | null): string {
  return adapter ? `adapter:${adapter.name}@${adapter.sha256}` : `base:${org}`;
}

export class Scheduler {
  private readonly groups = new Map<string, Group>();
  /** Orgs in admission order; each with its groups in admission order. */
  private readonly orgs: string[] = [];
  private readonly orgGroups = new Map<string, Group[]>();
  private orgTurn = 0;
  private readonly groupTurn = new Map<string, number>();
  private readonly running = new Map<string, Entry>();
  /** Taken off their queues for prefill and not yet running. */
  private readonly prefilling = new Set<Entry>();
  /** The entry whose long prompt is going in chunks, one per step, if any. */
  private chunked: Entry | null = null;
  private readonly entries = new Map<string, Entry>();
  private step = 0;
  private waitCounter = 0;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  /** Set by kick: something changed since the loop last looked, so it must not go to sleep. */
  private changed = false;
  private idleWaiters: (() => void)[] = [];
  private readonly quantum: number;
  private generated = 0;
  /** An acquire found every slot in use; no new acquire starts until this scheduler releases one. */
  private slotsFull = false;

  constructor(
    private readonly engine: SchedulerEngine,
    private readonly tokenizer: Tokenizer,
    private readonly adapters: AdapterSlots,
    private readonly options: SchedulerOptions,
  ) {
    this.quantum = options.adapterQuantumSteps ?? 16;
    if (options.maxAdaptersPerStep < 1) throw new RangeError("maxAdaptersPerStep must be at least 1");
    if (options.maxBatch < 1) throw new RangeError("maxBatch must be at least 1");
  }

  /** Queues a job; its adapter starts loading at once. Resolves when it ends, however it ends. */
  submit(job: Job): Promise<Outcome> {
    if (this.entries.has(job.id)) {
      return Promise.reject(new Error(`job ${job.id} is already scheduled`));
    }
    return new Promise((resolve) => {
      const fail = (error: JobError) => resolve(unrunOutcome("error", error));
      if (job.promptTokens.length === 0) return fail(new JobError("invalid_request", "the prompt is empty"));
      if (job.promptTokens.length >= this.options.maxContext) {
        return fail(
          new JobError(
            "context_length_exceeded",
            `the prompt has ${job.promptTokens.length} tokens; this worker's context holds ${this.options.maxContext}, generated tokens included`,
          ),
        );
      }
      let output: SequenceOutput;
      try {
        output = new SequenceOutput(this.tokenizer, job.sampling, job.promptTokens, {
          ...job.limits,
          maxContext: this.options.maxContext,
        });
      } catch (error) {
        return fail(new JobError("invalid_request", (error as Error).message));
      }
      const group = this.groupFor(job);
      const entry: Entry = {
        job,
        group,
        output,
        feed: job.promptTokens,
        fed: 0,
        cached: 0,
        prefilled: false,
        started: false,
        parked: false,
        ending: null,
        resolve,
      };
      // Each job queues behind the group's jobs of its class and ahead of the later classes.
      insertBefore(group.queue, entry, (e) => classOf(e.job) > classOf(job));
      this.entries.set(job.id, entry);
      if (job.adapter) this.adapters.prefetch(job.adapter);
      this.kick();
    });
  }

  /** Stops a job within one step; it ends "cancelled" with what it generated. Unknown ids are ignored. */
  cancel(id: string): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    if (entry.prefilled) {
      entry.ending ??= { reason: "cancelled" };
      this.kick();
    } else {
      this.flushHeld(entry);
      this.dequeue(entry, this.outcome(entry, "cancelled"));
    }
  }

  /**
   * Fails every job of an adapter (deleted, or its weights gone): queued ones at once, running ones at the
   * next step. The adapter's slot is released as soon as nothing runs on it.
   */
  failAdapter(name: string, error: JobError): void {
    for (const group of this.groups.values()) {
      if (group.adapter?.name !== name) continue;
      for (const entry of [...group.queue]) this.dequeue(entry, this.outcome(entry, "error", error));
      for (const entry of [...this.running.values(), ...this.prefilling])
        if (entry.group === group) entry.ending ??= { reason: "error", error };
      if (group.state === "acquiring") group.doomed = true;
      else if (group.state === "active") group.state = "draining";
    }
    this.kick();
  }

  /**
   * Takes back every job not yet started (a draining worker hands them on); returns their ids. A preempted
   * batch line has sent tokens already, so it stays and ends here.
   */
  handBack(): string[] {
    const ids: string[] = [];
    for (const group of this.groups.values()) {
      for (const entry of [...group.queue]) {
        if (entry.started) continue;
        ids.push(entry.job.id);
        this.dequeue(entry, { kind: "handed-back" });
      }
    }
    this.kick();
    return ids;
  }

  /** Resolves once no job is queued or running. */
  idle(): Promise<void> {
    if (this.entries.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  get queueDepth(): number {
    return this.entries.size - this.running.size;
  }

  get runningCount(): number {
    return this.running.size;
  }

  /** Tokens generated since the scheduler started. */
  get tokensGenerated(): number {
    return this.generated;
  }

  private groupFor(job: Job): Group {
    const key = groupKey(job.org, job.adapter);
    let group = this.groups.get(key);
    if (!group) {
      group = {
        key,
        org: job.org,
        adapter: job.adapter,
        queue: [],
        running: 0,
        state: job.adapter ? "idle" : "active",
        slot: 0,
        activeSince: this.step,
        waitingSince: this.waitCounter++,
        doomed: false,
      };
      this.groups.set(key, group);
      let list = this.orgGroups.get(job.org);
      if (!list) {
        list = [];
        this.orgGroups.set(job.org, list);
        this.orgs.push(job.org);
      }
      list.push(group);
    }
    return group;
  }

  private dequeue(entry: Entry, outcome: Outcome): void {
    const at = entry.group.queue.indexOf(entry);
    if (at >= 0) entry.group.queue.splice(at, 1);
    // The engine takes calls in order, so the id is free again before any later call could reuse it.
    if (entry.parked) void Promise.resolve(this.engine.release(entry.job.id)).catch(() => {});
    this.releaseIfUnused(entry.group);
    this.settle(entry, outcome);
  }

  private settle(entry: Entry, outcome: Outcome): void {
    this.entries.delete(entry.job.id);
    entry.resolve(outcome);
    if (this.entries.size === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private outcome(entry: Entry, finishReason: FinishReason, error?: JobError): Outcome {
    return {
      kind: "done",
      finishReason,
      ...(error ? { error } : {}),
      promptTokens: entry.started ? entry.job.promptTokens.length : 0,
      cachedPromptTokens: entry.started ? entry.cached : 0,
      tokens: entry.output.tokens,
      text: entry.output.text,
    };
  }

  /** Starts the loop, or wakes it when it waits for something to do. */
  private kick(): void {
    this.changed = true;
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      wake();
    }
    this.loop ??= this.pump().finally(() => {
      this.loop = null;
      if (this.entries.size > 0) this.kick();
    });
  }

  private async pump(): Promise<void> {
    // A cancelled chunked prompt is settled already, but the engine holds its cache until the next step.
    while (this.entries.size > 0 || this.hasHeldSlots() || this.chunked !== null) {
      this.changed = false;
      const started = performance.now();
      await this.retire();
      await this.yieldPlacesToLive();
      this.arrange();
      const before = this.generated;
      const ran = new Set<Entry>();
      await this.admit(ran);
      await this.decode(ran);
      if (ran.size > 0) {
        this.step++;
        const adapters = new Set([...ran].filter((e) => e.group.adapter).map((e) => e.group.key));
        this.options.onStep?.({
          seconds: (performance.now() - started) / 1000,
          sequences: ran.size,
          distinctAdapters: adapters.size,
          tokens: this.generated - before,
        });
      } else if (!this.changed && (this.entries.size > 0 || this.hasHeldSlots())) {
        // Nothing could run: every queued job waits for an adapter to load. Sleep until something changes.
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    }
  }

  private hasHeldSlots(): boolean {
    for (const group of this.groups.values()) if (group.adapter && group.state !== "idle") return true;
    return false;
  }

  /** Ends the running sequences that were cancelled or failed since the last step. */
  private async retire(): Promise<void> {
    for (const entry of [...this.running.values()]) {
      if (!entry.ending) continue;
      await this.finish(
        entry,
        entry.ending.reason,
        entry.ending.reason === "error" ? entry.ending.error : undefined,
      );
    }
  }

  /**
   * When adapters a live request waits for outnumber the free places, adapters that serve only batch lines
   * give theirs up at once: their running lines are preempted, so the slot is free for arrange to give.
   */
  private async yieldPlacesToLive(): Promise<void> {
    const adapterGroups = [...this.groups.values()].filter((g) => g.adapter);
    const liveWaiting = adapterGroups.filter(
      (g) => g.state === "idle" && g.queue.length > 0 && headClass(g) !== BATCH,
    ).length;
    const held = adapterGroups.filter((g) => g.state !== "idle").length;
    let short = liveWaiting - (this.options.maxAdaptersPerStep - held);
    if (short <= 0) return;
    const liveRunning = new Set<Group>();
    for (const entry of [...this.running.values(), ...this.prefilling])
      if (!entry.job.batch) liveRunning.add(entry.group);
    // The adapters with the fewest lines running give way first: the least work to redo.
    for (const group of adapterGroups.sort((a, b) => a.running - b.running)) {
      if (short <= 0) break;
      const batchOnly = headClass(group) === BATCH;
      const holdsPlace = group.state === "active" || group.state === "draining";
      // A group with a prompt in prefill (going in chunks) keeps its place until that prompt is in.
      if (!holdsPlace || !batchOnly || liveRunning.has(group) || this.prefillingIn(group)) continue;
      group.state = "draining";
      for (const entry of [...this.running.values()]) if (entry.group === group) await this.preempt(entry);
      this.releaseIfUnused(group);
      if ((group.state as GroupState) === "idle") short--;
    }
  }

  private prefillingIn(group: Group): boolean {
    for (const entry of this.prefilling) if (entry.group === group) return true;
    return false;
  }

  /** Releases adapters nobody needs, gives places to waiting adapters, and asks old ones to make room. */
  private arrange(): void {
    let held = 0;
    for (const group of [...this.groups.values()]) {
      if (!group.adapter) {
        if (group.queue.length === 0 && group.running === 0) this.forget(group);
        continue;
      }
      this.releaseIfUnused(group);
      if (group.state === "idle" && group.queue.length === 0) this.forget(group);
      else if (group.state !== "idle") held++;
    }
    // Adapters with a live request queued get places before those with only batch lines.
    const waiting = [...this.groups.values()]
      .filter((g) => g.adapter && g.state === "idle" && g.queue.length > 0)
      .sort((a, b) => headClass(a) - headClass(b) || a.waitingSince - b.waitingSince);
    for (const group of waiting) {
      if (held >= this.options.maxAdaptersPerStep || this.slotsFull) break;
      this.startAcquire(group);
      held++;
    }
    const stillWaiting = waiting.filter((g) => g.state === "idle").length;
    if (stillWaiting === 0) return;
    let draining = [...this.groups.values()].filter((g) => g.state === "draining").length;
    const candidates = [...this.groups.values()]
      .filter((g) => g.state === "active" && g.adapter && this.step - g.activeSince >= this.quantum)
      .sort((a, b) => a.activeSince - b.activeSince);
    for (const group of candidates) {
      if (draining >= stillWaiting) break;
      group.state = "draining";
      draining++;
    }
  }

  /** Gives back the slot of an adapter with nothing running that has nothing queued or must make room. */
  private releaseIfUnused(group: Group): void {
    if (!group.adapter || group.running > 0) return;
    if (group.state !== "active" && group.state !== "draining") return;
    if (group.queue.length > 0 && group.state === "active") return;
    this.releaseSlot(group.adapter);
    group.state = "idle";
    group.waitingSince = this.waitCounter++;
  }

  private forget(group: Group): void {
    this.groups.delete(group.key);
    const list = this.orgGroups.get(group.org);
    if (!list) return;
    list.splice(list.indexOf(group), 1);
    if (list.length === 0) {
      this.orgGroups.delete(group.org);
      this.groupTurn.delete(group.org);
      this.orgs.splice(this.orgs.indexOf(group.org), 1);
    }
  }

  private startAcquire(group: Group): void {
    const ref = group.adapter!;
    group.state = "acquiring";
    this.adapters.acquire(ref).then(
      (slot) => {
        if (group.doomed || group.queue.length === 0) {
          this.releaseSlot(ref);
          group.state = "idle";
          group.doomed = false;
        } else {
          group.slot = slot;
          group.state = "active";
          group.activeSince = this.step;
        }
        this.kick();
      },
      (error: unknown) => {
        group.state = "idle";
        group.doomed = false;
        if (error instanceof NoFreeSlotError) {
          // Keeps its place in line: it goes first once a slot is released, or after a short pause when
          // the slots are held by someone else (a pin being loaded).
          this.slotsFull = true;
          setTimeout(() => this.releaseSlot(null), SLOT_RETRY_MS).unref();
          return;
        }
        const reason =
          error instanceof AdapterRemovedError
            ? new JobError("model_not_found", `adapter ${ref.name} was deleted`)
            : new JobError(
                "adapter_unavailable",
                `adapter ${ref.name} could not be loaded: ${error instanceof Error ? error.message : String(error)}`,
              );
        for (const entry of [...group.queue]) this.dequeue(entry, this.outcome(entry, "error", reason));
        this.kick();
      },
    );
  }

  /** Gives back a slot (null: none, only look again); acquires held back for a free slot may start. */
  private releaseSlot(ref: AdapterRef | null): void {
    if (ref) this.adapters.release(ref);
    if (!this.slotsFull) return;
    this.slotsFull = false;
    this.kick();
  }

  /**
   * The next group, taking turns across orgs and then across an org's groups, that may admit a job now;
   * none of `skip`. Groups with a priority request first in line go first, then those with a live request,
   * then those whose next job is a batch line.
   */
  private nextGroup(skip: ReadonlySet<Group>): { group: Group; orgAt: number; groupAt: number } | null {
    for (const most of [PRIORITY, LIVE, BATCH]) {
      const next = this.nextGroupOf(skip, most);
      if (next) return next;
    }
    return null;
  }

  /** nextGroup among groups whose first job's class is at most `most`. */
  private nextGroupOf(
    skip: ReadonlySet<Group>,
    most: number,
  ): { group: Group; orgAt: number; groupAt: number } | null {
    const orgs = this.orgs.length;
    for (let i = 0; i < orgs; i++) {
      const orgAt = (this.orgTurn + i) % orgs;
      const org = this.orgs[orgAt]!;
      const list = this.orgGroups.get(org)!;
      const turn = this.groupTurn.get(org) ?? 0;
      for (let j = 0; j < list.length; j++) {
        const groupAt = (turn + j) % list.length;
        const group = list[groupAt]!;
        const head = group.queue[0];
        if (head && group.state === "active" && !skip.has(group) && classOf(head.job) <= most) {
          return { group, orgAt, groupAt };
        }
      }
    }
    return null;
  }

  private async admit(ran: Set<Entry>): Promise<void> {
    if (this.chunked && !this.wanted(this.chunked)) await this.drop(this.chunked);
    const work = await this.takePrefills();
    const batches = prefillBatches(
      work.map((w) => w.tokens.length),
      this.engine.padsPrefills,
    );
    for (const batch of batches)
      await this.prefill(
        batch.map((i) => work[i]!),
        ran,
      );
  }

  /**
   * This step's prefill work within its token budget: first the next chunk of a prompt going in chunks,
   * then prompts taken off their queues in turn across orgs and adapters. Each taken entry counts as running
   * in its group from here: a cancel while its prompt runs must not release the slot the prompt is using.
   */
  private async takePrefills(): Promise<PrefillWork[]> {
    let budget = this.options.stepTokenBudget - this.running.size;
    let batchBudget = Math.floor(this.options.stepTokenBudget * BATCH_PREFILL_SHARE);
    const work: PrefillWork[] = [];
    const least = () => (work.length === 0 ? MIN_PREFILL_CHUNK : 0);
    // Batch lines prefill within their share of the step, so a wave of them keeps steps short for the live
    // requests that arrive meanwhile.
    const roomFor = (entry: Entry) =>
      Math.max(entry.job.batch ? Math.min(budget, batchBudget) : budget, least());
    const take = (taken: PrefillWork) => {
      budget -= taken.cost;
      if (taken.entry.job.batch) batchBudget -= taken.cost;
    };
    // The rest of the entry's prompt if it fits; else a chunk of what the step has left, unless another
    // prompt is in chunks or the chunk would be too small to be worth a run. null: it waits. Tokens a
    // stored prefix covers (`cached`) cost no prefill, so they do not count against the budget.
    const piece = (entry: Entry, cached: number): PrefillWork | null => {
      const rest = entry.feed.slice(entry.fed);
      const room = wantsPromptLogprobs(entry)
        ? Math.min(roomFor(entry), PROMPT_LOGPROBS_CHUNK)
        : roomFor(entry);
      const fits = room + cached;
      if (rest.length <= fits) return { entry, tokens: rest, more: false, cost: rest.length - cached };
      if ((this.chunked !== null && this.chunked !== entry) || room < MIN_PREFILL_CHUNK) return null;
      return { entry, tokens: rest.slice(0, fits), more: true, cost: room };
    };
    // The engine is asked only about a new prompt that does not fit as it is.
    const cachedOf = async (entry: Entry): Promise<number> =>
      entry.fed > 0 || entry.feed.length <= roomFor(entry) || wantsPromptLogprobs(entry)
        ? 0
        : await this.engine.cachedPrefixLength({
            tokens: entry.feed,
            slot: entry.group.slot,
            prefixScope: entry.job.org,
          });
    if (this.chunked) {
      const next = piece(this.chunked, 0)!;
      work.push(next);
      take(next);
    }
    // Groups whose next prompt waits for a prompt of this step to store the prefix they share.
    const waiting = new Set<Group>();
    const full = () => this.running.size + work.length >= this.options.maxBatch;
    for (;;) {
      const next = this.nextGroup(waiting);
      if (!next) break;
      const { group, orgAt, groupAt } = next;
      const entry = group.queue[0]!;
      // A full batch takes a live request in place of a running batch line (preempted below).
      if (full() && (entry.job.batch || !this.preemptionVictim())) break;
      if (entry.parked) {
        await this.resume(entry);
        budget -= 1;
        this.orgTurn = orgAt + 1;
        this.groupTurn.set(group.org, groupAt + 1);
        continue;
      }
      const waits = await this.waitsForSharedPrefix(entry, work);
      const cached = waits ? 0 : await cachedOf(entry);
      // Cancelled, failed or handed back while the engine answered: look again.
      if (group.queue[0] !== entry) continue;
      if (waits) {
        waiting.add(group);
        continue;
      }
      const taken = piece(entry, cached);
      if (!taken) break;
      if (full()) {
        const victim = this.preemptionVictim();
        if (!victim) break;
        await this.preempt(victim);
      }
      take(taken);
      group.queue.shift();
      group.running++;
      this.prefilling.add(entry);
      if (taken.more) this.chunked = entry;
      this.orgTurn = orgAt + 1;
      this.groupTurn.set(group.org, groupAt + 1);
      work.push(taken);
    }
    return work;
  }

  /**
   * A parked line rejoins the running batch, in its adapter's slot now, and decodes in this step. It counts
   * as running before the engine answers, so a cancel or failure meanwhile ends it at the next step.
   */
  private async resume(entry: Entry): Promise<void> {
    entry.group.queue.shift();
    entry.parked = false;
    entry.prefilled = true;
    entry.group.running++;
    this.running.set(entry.job.id, entry);
    try {
      await this.engine.resume!(entry.job.id, entry.group.slot);
    } catch (error) {
      const reason = new JobError("engine_error", `resuming failed: ${(error as Error).message}`);
      await this.finish(entry, "error", reason);
    }
  }

  /** The running batch line with the fewest tokens in cache (the least to park or prefill again; the latest on a tie). */
  private preemptionVictim(): Entry | undefined {
    let victim: Entry | undefined;
    let cost = Number.POSITIVE_INFINITY;
    for (const entry of this.running.values()) {
      if (!entry.job.batch || entry.ending) continue;
      const held = entry.job.promptTokens.length + entry.output.tokens.length;
      if (held <= cost) [victim, cost] = [entry, held];
    }
    return victim;
  }

  /**
   * Takes a running batch line out of the batch. It waits again, first among its group's batch lines, with
   * its cache parked in the engine, to rejoin as it was; or, where the engine cannot park, with its cache
   * released, to prefill its prompt and the tokens it generated. Either way its sampling state stays in its
   * SequenceOutput, so it generates what it would have without the pause.
   */
  private async preempt(entry: Entry): Promise<void> {
    if (entry.ending || !this.running.delete(entry.job.id)) return;
    // A park that fails (its copy could not be made) leaves the line to be released and prefilled again.
    const parked =
      this.engine.park !== undefined &&
      this.engine.resume !== undefined &&
      (await this.engine.park(entry.job.id).then(
        () => true,
        () => false,
      ));
    if (parked) entry.parked = true;
    else {
      await this.engine.release(entry.job.id);
      entry.feed = [...entry.job.promptTokens, ...entry.output.tokens.map((t) => t.token)];
      entry.fed = 0;
    }
    entry.prefilled = false;
    insertBefore(entry.group.queue, entry, (e) => e.job.batch === true && !e.started);
    entry.group.running--;
    this.options.onPreempt?.(entry.job.id);
    this.releaseIfUnused(entry.group);
  }

  /**
   * Whether a new prompt should wait a step: it shares MIN_SHARED_PREFIX more tokens with a prompt this step
   * prefills (or one going in chunks) than the prefix cache covers now, and that prompt's prefix will be in
   * the cache once its prefill ends.
   */
  private async waitsForSharedPrefix(entry: Entry, work: readonly PrefillWork[]): Promise<boolean> {
    const prompt = entry.feed;
    if (!this.engine.prefixReadyAfterPrefill || entry.fed > 0 || prompt.length <= MIN_SHARED_PREFIX)
      return false;
    if (wantsPromptLogprobs(entry)) return false;
    let shared = 0;
    for (const { entry: other } of work) {
      if (other.group !== entry.group || other.job.org !== entry.job.org) continue;
      shared = Math.max(shared, sharedPrefixLength(prompt, other.feed));
    }
    // A prompt reuses whole blocks of a stored prefix, and computes at least its own last token.
    const reusable = Math.floor(Math.min(shared, prompt.length - 1) / PREFIX_BLOCK) * PREFIX_BLOCK;
    if (reusable < MIN_SHARED_PREFIX) return false;
    const cached = await this.engine.cachedPrefixLength({
      tokens: prompt,
      slot: entry.group.slot,
      prefixScope: entry.job.org,
    });
    return reusable - cached >= MIN_SHARED_PREFIX;
  }

  /**
   * Prefills prompts, or chunks of them, in one engine call; a prompt whose last piece ran joins the
   * running batch with its first token.
   */
  private async prefill(batch: readonly PrefillWork[], ran: Set<Entry>): Promise<void> {
    // One cancelled or failed while an earlier batch of the step ran is not prefilled at all.
    const pieces: PrefillWork[] = [];
    for (const work of batch) {
      if (this.wanted(work.entry)) pieces.push(work);
      else await this.drop(work.entry);
    }
    if (pieces.length === 0) return;
    const allLogits = pieces.map(({ entry }) => wantsPromptLogprobs(entry));
    let logits: Float32Array[];
    try {
      logits = await this.engine.prefillTogether(
        pieces.map(({ entry, tokens, more }, i) => ({
          id: entry.job.id,
          tokens,
          slot: entry.group.slot,
          prefixScope: entry.job.org,
          ...(more ? { more } : {}),
          ...(allLogits[i] ? { allLogits: true } : {}),
        })),
      );
    } catch (error) {
      const reason = new JobError("engine_error", `prefill failed: ${(error as Error).message}`);
      for (const { entry } of pieces) {
        entry.ending = { reason: "error", error: reason };
        await this.drop(entry);
      }
      return;
    }
    // What the prefix cache covered counts once, at the prompt's first prefill (a preempted line's second
    // prefill is the worker's cost, not the caller's).
    const complete = pieces.filter((p) => !p.more && !p.entry.started).map((p) => p.entry);
    const cached = await this.engine.reusedPromptTokens(complete.map((e) => e.job.id));
    for (const [i, entry] of complete.entries()) entry.cached = cached[i]!;
    let at = 0;
    for (const [i, { entry, tokens, more }] of pieces.entries()) {
      // The piece's rows: every position's with allLogits, else its last one's.
      const count = allLogits[i] ? tokens.length : 1;
      const rows = logits.slice(at, at + count);
      at += count;
      if (!this.wanted(entry)) {
        await this.drop(entry);
        continue;
      }
      const failure = allLogits[i] ? this.sendPromptLogprobs(entry, rows) : null;
      if (failure) {
        entry.ending = { reason: "error", error: failure };
        await this.drop(entry);
        continue;
      }
      entry.fed += tokens.length;
      ran.add(entry);
      if (more) continue;
      if (this.chunked === entry) this.chunked = null;
      this.prefilling.delete(entry);
      entry.prefilled = true;
      entry.started = true;
      this.running.set(entry.job.id, entry);
      if (entry.job.limits.maxTokens === 0) await this.finish(entry, "length");
      else await this.accept(entry, rows.at(-1)!);
    }
  }

  /**
   * The prompt logprobs a piece's rows give (row k, at position fed + k, predicts the prompt token after
   * it; the prompt's last row predicts the first generated token), sent before anything is generated.
   * The job's failure where a row cannot give them (all -inf or NaN), else null.
   */
  private sendPromptLogprobs(entry: Entry, rows: readonly Float32Array[]): JobError | null {
    const prompt = entry.job.promptTokens;
    const entries: PromptTokenLogprob[] = [];
    try {
      for (const [k, row] of rows.entries()) {
        const target = entry.fed + k + 1;
        if (target < prompt.length)
          entries.push(promptTokenLogprob(row, prompt[target]!, entry.job.promptLogprobs!));
      }
    } catch (error) {
      return new JobError("sampling_error", `prompt logprobs failed: ${(error as Error).message}`);
    }
    entry.job.onPromptLogprobs?.(entries);
    return null;
  }

  /** An admitted entry neither cancelled (settled then) nor failed since it was taken. */
  private wanted(entry: Entry): boolean {
    return this.entries.has(entry.job.id) && !entry.ending;
  }

  /**
   * An admitted entry cancelled (settled then) or failed before it joined the running batch: released,
   * settled unbilled if a failure has not settled it yet. Nothing of it went out.
   */
  private async drop(entry: Entry): Promise<void> {
    this.prefilling.delete(entry);
    if (this.chunked === entry) this.chunked = null;
    await this.engine.release(entry.job.id);
    this.leave(entry);
    const ending = entry.ending;
    if (ending && this.entries.has(entry.job.id)) {
      this.settle(
        entry,
        this.outcome(entry, ending.reason, ending.reason === "error" ? ending.error : undefined),
      );
    }
  }

  /**
   * An admitted entry that never joined the running batch gives its place in the group back, so the loop
   * looks at the queue again rather than sleeping: a step whose every prompt failed runs nothing, and
   * without this the jobs queued behind them would wait for the next submit.
   */
  private leave(entry: Entry): void {
    entry.group.running--;
    this.releaseIfUnused(entry.group);
    this.changed = true;
  }

  private async decode(ran: Set<Entry>): Promise<void> {
    if (this.running.size === 0) return;
    const last = new Map([...this.running].map(([id, e]) => [id, e.output.tokens.at(-1)!.token]));
    let rows: Map<string, DecodeRow>;
    try {
      rows = await this.engine.decodePicking(last, decodeChoices(this.running));
    } catch (error) {
      const reason = new JobError("engine_error", `decode failed: ${(error as Error).message}`);
      for (const entry of [...this.running.values()]) await this.finish(entry, "error", reason);
      return;
    }
    for (const [id, row] of rows) {
      const entry = this.running.get(id);
      if (!entry) continue;
      ran.add(entry);
      await this.accept(entry, row);
    }
  }

  private async accept(entry: Entry, row: DecodeRow): Promise<void> {
    let accepted: Accepted;
    try {
      accepted = entry.output.accept(row) ?? entry.output.accept(await this.engine.logitsOf(entry.job.id));
    } catch (error) {
      // A row the sampler cannot draw from (all -inf or NaN, a +inf logit), or an output format no token can
      // continue: this sequence fails, the others go on.
      const reason =
        error instanceof NoTokenLeftError
          ? new JobError("invalid_request", error.message)
          : new JobError("sampling_error", `sampling failed: ${(error as Error).message}`);
      await this.finish(entry, "error", reason);
      return;
    }
    const { token, text, finish, stopToken } = accepted;
    this.generated++;
    if (!stopToken) entry.job.onToken?.(token, text);
    else if (text) entry.job.onToken?.(null, text);
    if (finish) await this.finish(entry, finish);
  }

  private async finish(entry: Entry, reason: FinishReason, error?: JobError): Promise<void> {
    if (!this.running.delete(entry.job.id)) return;
    entry.group.running--;
    await this.engine.release(entry.job.id);
    if (reason !== "stop" && reason !== "error") this.flushHeld(entry);
    this.releaseIfUnused(entry.group);
    this.settle(entry, this.outcome(entry, reason, error));
  }

  /** Sends text a started sequence still held back (a possible stop string) when it ends otherwise. */
  private flushHeld(entry: Entry): void {
    if (!entry.started) return;
    const rest = entry.output.flush();
    if (rest) entry.job.onToken?.(null, rest);
  }
}

/** Puts an entry before the first of the queue's entries that `before` picks, or at the end. */
function insertBefore(queue: Entry[], entry: Entry, before: (e: Entry) => boolean): void {
  const at = queue.findIndex(before);
  if (at < 0) queue.push(entry);
  else queue.splice(at, 0, entry);
}
