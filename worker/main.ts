// The worker process's core, wired from its dependencies (a bus, a blob store, a metrics registry): the
// engine in its own thread, the adapter tiers, the scheduler, replies, heartbeats, control events and
// /metrics. `luminet worker` (cli/commands/worker.ts) connects NATS and calls startWorker; `luminet dev` can
// call it on the in-process bus.
//
// A request's life here: pulled from the worker's own queue or its base's shared one (only while there is
// room: a pulled request is this worker's until acked), its adapter's load starts, the worker claims the
// reply, the scheduler runs it, chunks stream out, one usage event is stored, the Final goes out, the
// request is acked. The delivery is kept alive (working()) the whole time so it is not redelivered.
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Server } from "node:http";
import type { Bus, Delivery, RequestPuller, Subscription } from "../bus/bus.ts";
import { logger } from "../core/logger.ts";
import { listeningPort, serveMetrics } from "../core/metrics-server.ts";
import { rendezvous } from "../core/rendezvous.ts";
import type { InferenceRequest, SamplingParams, WorkerHeartbeat } from "../schema/wire.ts";
import { AdapterManager } from "./adapters/adapter-manager.ts";
import type { BlobStore } from "./adapters/blob-store.ts";
import { AdapterControls, deletedAdapterError } from "./control.ts";
import type { Device } from "./engine/device.ts";
import { EngineThread } from "./engine/engine-thread.ts";
import { compileGrammar } from "./engine/grammar-compiler.ts";
import { startOf } from "./engine/grammar-stacks.ts";
import { ANY_OBJECT, compileJsonSchema } from "./engine/json-schema.ts";
import { loadModelConfig, MODEL_CONTEXT } from "./engine/model-config.ts";
import type { SequenceLimits } from "./engine/sequence-output.ts";
import { compileFullMatch } from "./engine/string-automaton.ts";
import { loadTokenizer, type Tokenizer } from "./engine/tokenizer.ts";
import { Heartbeat } from "./heartbeat.ts";
import { WorkerMetrics } from "./metrics.ts";
import { OrphanQueues } from "./orphan-queues.ts";
import { ReplyStream } from "./replies.ts";
import { type Job, JobError, type Outcome, Scheduler, unrunOutcome } from "./scheduler.ts";
import { UsageSender } from "./usage-sender.ts";
import { UsageSpool } from "./usage-spool.ts";

export const VERSION: string = JSON.parse(
  readFileSync(new URL("../package.json", import.meta.url), "utf8"),
).version;

export interface WorkerOptions {
  bus: Bus;
  base: string;
  workerId: string;
  modelDir: string;
  device: Device;
  /** Adapter slots on the device. */
  slots: number;
  /** Distinct adapters in one step; at most `slots`. */
  maxAdaptersPerBatch: number;
  /** Largest adapter rank a slot holds. */
  maxRank: number;
  /** Most sequences running at once. */
  maxBatch: number;
  /** Longest sequence, prompt + generated. */
  maxContext: number;
  /** Tokens one step processes: one per running sequence plus prefilled prompt tokens. */
  stepTokens: number;
  ramCacheBytes: number;
  diskCacheDir: string;
  diskCacheBytes: number;
  blobs: BlobStore;
  /** The bus's ack wait: deliveries are kept alive well within it. */
  ackWaitMs: number;
  /**
   * How often a running request asks its gateway whether it still waits (ReplyStream.stillWanted): a
   * request whose gateway died is cancelled within this, not generated to its max_tokens for nobody.
   */
  replyCheckMs?: number;
  /** onnxruntime intra-op threads; default all cores. */
  threads?: number;
  /** CPU: every graph variant keeps its own prepacked copy of the weights (faster steps, memory × variants). */
  prepackWeights?: boolean;
  /** CPU: 4-bit projection weights (EngineOptions.quantize). */
  quantize?: "q4";
  /**
   * Bytes of earlier prompts' prefix caches the engine keeps, so a prompt that starts the same way on the
   * same adapter prefills only the rest (on CUDA: whole cache rows beyond maxBatch). Default 0.
   */
  prefixCacheBytes?: number;
  /** Serve /metrics on this port (0: any free port). */
  metricsPort?: number;
  /** Where the series go; default a registry of the worker's own. */
  metrics?: WorkerMetrics;
  heartbeatIntervalMs?: number;
  /**
   * Folder where usage events wait on disk until JetStream stored them (worker/usage-spool.ts); without
   * one they wait only in memory, and a worker killed during a NATS outage loses them.
   */
  usageSpoolDir?: string;
}

export class WorkerConfigError extends Error {
  override readonly name = "WorkerConfigError";
}

/**
 * Requests held beyond the running batch: enough to keep the next step fed and cold adapters loading
 * ahead, few enough that requests are not hoarded while other workers of the base sit idle.
 */
const QUEUE_PER_BATCH = 0.5;
/** ReplyStream.stillWanted every this often while a request runs (WorkerOptions.replyCheckMs). */
const REPLY_CHECK_MS = 5_000;

/** A held request. Two copies of one request (each with its own reply subject) are held apart. */
interface Held {
  request: InferenceRequest;
  cancelled: boolean;
}

export class LuminetWorker {
  private readonly held = new Set<Held>();
  private readonly serving = new Set<Promise<void>>();
  private readonly pullers = new Set<RequestPuller>();
  /** The puller of this worker's own queue and its base's shared one: its problem() makes it not ready. */
  private ownPuller: RequestPuller | null = null;
  private readonly subscriptions: Subscription[] = [];
  /** Each running request's "is it still wanted?" check, run at once when the bus reconnects. */
  private readonly replyChecks = new Set<() => Promise<void>>();
  private roomWaiters: (() => void)[] = [];
  private draining = false;
  /** This process's own id, new at each start: its claims say it (ReplyClaim.incarnation). */
  private readonly incarnation = randomUUID().replaceAll("-", "");
  private stopped: Promise<void> | null = null;
  private heartbeat: Heartbeat | null = null;
  private metricsServer: Server | null = null;
  private controls: AdapterControls | null = null;
  /** The base's live workers at the last heartbeat, this one included. */
  private liveWorkers: WorkerHeartbeat[] = [];
  private readonly capacity: number;
  private readonly log;
  /**
   * Resolves, with why, once the engine thread ended unexpectedly and this worker drained because of it
   * (what had not started went back to the base's queue for other workers): `luminet worker` then exits
   * non-zero for its supervisor to start it again.
   */
  readonly engineLost: Promise<Error>;

  private constructor(
    private readonly options: WorkerOptions,
    private readonly engine: EngineThread,
    private readonly tokenizer: Tokenizer,
    private readonly manager: AdapterManager,
    private readonly scheduler: Scheduler,
    private readonly usage: UsageSender,
    readonly metrics: WorkerMetrics,
  ) {
    this.capacity = Math.ceil(options.maxBatch * (1 + QUEUE_PER_BATCH));
    this.log = logger.child({ worker: options.workerId, base: options.base });
    this.engineLost = engine.ended.then(async (error) => {
      this.log.error({ err: error.message }, "the engine thread ended: draining, the worker cannot serve");
      await this.drain().catch((e: Error) =>
        this.log.error({ err: e.message }, "drain after the engine ended failed"),
      );
      return error;
    });
  }

  /** Starts every part, then begins pulling. Resolves once the worker serves. */
  static async start(options: WorkerOptions): Promise<LuminetWorker> {
    if (options.maxAdaptersPerBatch > options.slots) {
      throw new WorkerConfigError(
        `--max-adapters-per-batch ${options.maxAdaptersPerBatch} exceeds --slots ${options.slots}: every adapter in a step needs a slot`,
      );
    }
    const metrics = options.metrics ?? new WorkerMetrics();
    let worker: LuminetWorker;
    const tokenizer = loadTokenizer(options.modelDir);
    // Never past the positions the model was built for (as `generate`): a longer --max-context would size
    // the KV cache for sequences the model cannot place.
    const { maxPositions } = loadModelConfig(options.modelDir);
    if (options.maxContext > maxPositions) {
      logger.warn(
        { worker: options.workerId, asked: options.maxContext, maxContext: maxPositions },
        `--max-context is past ${MODEL_CONTEXT}: using the model's`,
      );
      options = { ...options, maxContext: maxPositions };
    }
    const engine = await EngineThread.start({
      modelDir: options.modelDir,
      device: options.device,
      maxContext: options.maxContext,
      slots: options.slots,
      maxRank: options.maxRank,
      maxAdaptersPerStep: options.maxAdaptersPerBatch,
      maxBatch: options.maxBatch,
      // The CUDA engine sizes its native steps to the scheduler's per-step token budget.
      stepTokens: options.stepTokens,
      ...(options.threads ? { threads: options.threads } : {}),
      ...(options.prepackWeights ? { prepackWeights: true } : {}),
      ...(options.quantize ? { quantize: options.quantize } : {}),
      ...(options.prefixCacheBytes ? { prefixCacheBytes: options.prefixCacheBytes } : {}),
    });
    try {
      await engine.warmUp();
      const manager = new AdapterManager({
        model: engine.model,
        maxRank: options.maxRank,
        slots: options.slots,
        writeSlot: (slot, adapter) => engine.writeAdapter(slot, adapter),
        clearSlot: (slot) => engine.clearSlot(slot),
        ramCacheBytes: options.ramCacheBytes,
        diskCacheDir: options.diskCacheDir,
        diskCacheBytes: options.diskCacheBytes,
        blobs: options.blobs,
        onLoad: (tier, seconds) => metrics.observeLoad(tier, seconds),
        onEvict: (tier) => metrics.countEviction(tier),
      });
      await manager.started();
      const scheduler = new Scheduler(engine, tokenizer, manager, {
        maxBatch: options.maxBatch,
        maxContext: options.maxContext,
        stepTokenBudget: options.stepTokens,
        maxAdaptersPerStep: options.maxAdaptersPerBatch,
        onStep: (step) => {
          metrics.stepSeconds.observe(step.seconds);
          metrics.batchDistinctAdapters.observe(step.distinctAdapters);
          metrics.tokensGenerated.inc(step.tokens);
          metrics.runningSequences.set(scheduler.runningCount);
        },
        onPreempt: () => metrics.preemptions.inc(),
      });
      const spool = options.usageSpoolDir ? UsageSpool.open(options.usageSpoolDir) : null;
      const usage = new UsageSender(options.bus, spool);
      metrics.watchUsageEvents(() => usage.waiting);
      worker = new LuminetWorker(options, engine, tokenizer, manager, scheduler, usage, metrics);
    } catch (error) {
      await engine.close().catch(() => {});
      throw error;
    }
    try {
      await worker.begin();
    } catch (error) {
      // Whatever began (subscriptions, /metrics, heartbeats) stops with the engine.
      await worker.drain().catch(() => {});
      throw error;
    }
    return worker;
  }

  get workerId(): string {
    return this.options.workerId;
  }

  /** The port /metrics listens on, when it does. */
  get metricsPort(): number | undefined {
    return this.metricsServer ? listeningPort(this.metricsServer) : undefined;
  }

  /** Pins, evictions and what is resident, for heartbeats and tests. */
  tiers() {
    return this.manager.tiers();
  }

  /**
   * Stops pulling, hands back every request that has not started (another worker takes it at once), lets
   * the running ones finish, stops beating and releases the engine.
   */
  drain(): Promise<void> {
    this.stopped ??= this.shutDown();
    return this.stopped;
  }

  private async begin(): Promise<void> {
    const { bus, base, workerId } = this.options;
    const { controls, subscription } = await AdapterControls.follow(bus, base, {
      pin: (ref) => this.manager.pin(ref),
      unpin: (name) => this.manager.unpin(name),
      remove: (name) => this.manager.remove(name),
      prefetch: (ref) => this.manager.prefetch(ref),
      stageNew: (ref) => {
        // Where the gateway places an adapter no worker holds: rendezvous hashing over the live workers.
        if (rendezvous(ref.name, this.liveWorkers)?.worker_id !== workerId) return;
        this.log.info({ adapter: ref.name }, "loading a new adapter ahead of its first request");
        this.manager.prefetch(ref);
      },
      warm: () => {
        const { slot, ram } = this.manager.tiers();
        return [...slot, ...ram];
      },
      failAdapter: (name, error) => this.scheduler.failAdapter(name, error),
    });
    this.controls = controls;
    this.subscriptions.push(subscription);
    // A gateway's cancel sent while the connection was down may be lost: ask now, not at the next check.
    this.subscriptions.push(
      bus.onReconnect(() => {
        for (const check of this.replyChecks) void check();
      }),
    );
    this.usage.resendSpooled();
    this.subscriptions.push(
      await bus.onCancel(base, ({ request_id }) => {
        for (const held of this.held) if (held.request.id === request_id) held.cancelled = true;
        this.scheduler.cancel(request_id);
      }),
    );
    if (this.options.metricsPort !== undefined) {
      this.metricsServer = await serveMetrics(
        this.metrics.registry,
        this.options.metricsPort,
        undefined,
        () => (this.draining ? "draining" : (this.pullProblem() ?? this.heartbeat?.problem ?? null)),
      );
    }
    const orphans = new OrphanQueues(workerId, (deadId) => this.adopt(deadId));
    this.heartbeat = new Heartbeat(
      bus,
      () => this.state(),
      this.options.heartbeatIntervalMs,
      () => {
        this.updateGauges();
        bus.liveHeartbeats(base).then(
          (live) => {
            this.liveWorkers = live;
            orphans.observe(live);
          },
          (error: Error) => this.log.warn({ err: error }, "reading heartbeats failed"),
        );
      },
      () => this.pullProblem(),
    );
    await this.heartbeat.start();
    bus.queuedWorkers(base).then(
      (workerIds) => orphans.remember(workerIds),
      (error: Error) => this.log.warn({ err: error }, "listing the base's worker queues failed"),
    );
    const puller = await bus.pullRequests({ base, workerId });
    this.pullers.add(puller);
    this.ownPuller = puller;
    void this.pull(puller);
    this.log.info(
      { metricsPort: this.metricsPort, slots: this.options.slots, version: VERSION },
      "worker ready",
    );
  }

  private pullProblem(): string | null {
    const problem = this.ownPuller?.problem() ?? null;
    return problem === null ? null : `cannot pull requests: ${problem}`;
  }

  private state() {
    const tiers = this.manager.tiers();
    return {
      worker_id: this.options.workerId,
      base: this.options.base,
      version: VERSION,
      adapters: { slot: tiers.slot, ram: tiers.ram, disk: tiers.disk },
      pins: tiers.pinned,
      free_slots: tiers.freeSlots,
      queue_depth: Math.max(0, this.held.size - this.scheduler.runningCount),
      running: this.scheduler.runningCount,
      max_batch: this.options.maxBatch,
      slots: this.options.slots,
      tokensGenerated: this.scheduler.tokensGenerated,
    };
  }

  private updateGauges(): void {
    const tiers = this.manager.tiers();
    const pinned = tiers.pinned.filter((name) => tiers.slot.includes(name)).length;
    const free = tiers.freeSlots;
    this.metrics.setSlots({ free, pinned, used: Math.max(0, this.options.slots - free - pinned) });
    this.metrics.queueDepth.set(Math.max(0, this.held.size - this.scheduler.runningCount));
    this.metrics.runningSequences.set(this.scheduler.runningCount);
    // Asked of the engine thread, so it answers after the step under way (a gauge a step late is fine);
    // an engine closing meanwhile has nothing worth reporting.
    this.engine.prefixCacheStats().then(
      (stats) => {
        if (stats) this.metrics.setPrefixCache(stats);
      },
      () => {},
    );
  }

  /** Pulls while there is room, until the puller closes. */
  private async pull(puller: RequestPuller, onDelivery?: () => void): Promise<void> {
    for (;;) {
      await this.room();
      if (this.draining) break;
      const delivery = await puller.next();
      if (!delivery) break;
      onDelivery?.();
      if (this.draining) {
        delivery.nak();
        break;
      }
      const serving = this.serve(delivery).catch((error: Error) =>
        this.log.error({ err: error, request: delivery.message.id }, "serving a request failed"),
      );
      this.serving.add(serving);
      void serving.finally(() => {
        this.serving.delete(serving);
        this.roomWaiters.shift()?.();
      });
    }
  }

  private room(): Promise<void> {
    if (this.draining || this.serving.size < this.capacity) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  /** Pulls a dead worker's own queue until nothing more arrives for a while, or it comes back. */
  private async adopt(deadId: string): Promise<Subscription> {
    const { bus, base, ackWaitMs } = this.options;
    if (this.draining) return { close: async () => {} };
    this.log.warn({ dead: deadId }, "a worker of this base stopped beating; serving its queue");
    const puller = await bus.pullRequests({ base, workerId: deadId, shared: false });
    this.pullers.add(puller);
    // Its unacked requests come back after the ack wait; stale gateway views may still send it some.
    const quietMs = Math.max(2 * ackWaitMs, 10_000);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const close = async () => {
      clearTimeout(timer);
      this.pullers.delete(puller);
      await puller.close();
    };
    const rearm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => void close(), quietMs);
    };
    rearm();
    void this.pull(puller, rearm);
    return { close };
  }

  private async serve(delivery: Delivery<InferenceRequest>): Promise<void> {
    const request = delivery.message;
    const { ackWaitMs } = this.options;
    if (request.base !== this.options.base) {
      this.log.error({ request: request.id, base: request.base }, "request for another base; dropped");
      delivery.term();
      return;
    }
    if (Date.now() > request.deadline) {
      delivery.term();
      return;
    }
    const held: Held = { request, cancelled: false };
    this.held.add(held);
    let replyCheck: ReturnType<typeof setInterval> | undefined;
    let checkReply: (() => Promise<void>) | undefined;
    const keepAlive = setInterval(() => {
      delivery.working();
      // Past its deadline nobody waits for it: stop it like a cancel, billing what it generated.
      if (Date.now() > request.deadline) this.scheduler.cancel(request.id);
    }, ackWaitMs / 3);
    try {
      // Where its adapter was on arrival, counted once the request is this worker's (claimed).
      const arrivedAt = request.adapter ? this.manager.whereIs(request.adapter) : null;
      if (request.adapter && !this.controls?.isDeleted(request.adapter.name)) {
        this.manager.prefetch(request.adapter);
      }
      const replies = new ReplyStream(
        this.options.bus,
        request,
        { workerId: this.options.workerId, incarnation: this.incarnation },
        this.tokenizer,
        this.usage,
      );
      if (!(await replies.claim())) {
        delivery.term();
        return;
      }
      if (arrivedAt) this.metrics.countArrival(arrivedAt);
      if (this.draining) {
        delivery.nak();
        return;
      }
      checkReply = async () => {
        if (await replies.stillWanted()) return;
        this.log.info(
          { request: request.id },
          "nobody waits for the reply any more (its gateway is gone): cancelled",
        );
        this.scheduler.cancel(request.id);
      };
      this.replyChecks.add(checkReply);
      replyCheck = setInterval(checkReply, this.options.replyCheckMs ?? REPLY_CHECK_MS);
      const outcome = await this.run(held, replies);
      if (outcome.kind === "handed-back") {
        delivery.nak();
        return;
      }
      await replies.finish({
        finishReason: outcome.finishReason,
        ...(outcome.error ? { error: { code: outcome.error.code, message: outcome.error.message } } : {}),
        promptTokens: outcome.promptTokens,
        cachedPromptTokens: outcome.cachedPromptTokens,
        outputTokens: outcome.tokens.length,
      });
      await delivery.ack();
    } finally {
      clearInterval(keepAlive);
      clearInterval(replyCheck);
      if (checkReply) this.replyChecks.delete(checkReply);
      this.held.delete(held);
    }
  }

  private run(held: Held, replies: ReplyStream): Promise<Outcome> {
    const { request } = held;
    const refuse = (error: JobError): Promise<Outcome> => Promise.resolve(unrunOutcome("error", error));
    if (held.cancelled) return Promise.resolve(unrunOutcome("cancelled"));
    if (request.adapter && this.controls?.isDeleted(request.adapter.name)) {
      return refuse(deletedAdapterError(request.adapter.name));
    }
    const vocab = this.engine.model.vocabSize;
    const outside = request.prompt_token_ids.find((id) => id >= vocab);
    if (outside !== undefined) {
      return refuse(
        new JobError("invalid_request", `prompt token id ${outside} is outside the vocabulary of ${vocab}`),
      );
    }
    const { sampling } = request;
    for (const [param, ids] of [
      ["allowed_token_ids", sampling.allowed_token_ids ?? []],
      ["bad_words_ids", sampling.bad_words_ids?.flat() ?? []],
    ] as const) {
      const outside = ids.find((id) => id >= vocab);
      if (outside !== undefined) {
        return refuse(
          new JobError(
            "invalid_request",
            `${param}: token id ${outside} is outside the vocabulary of ${vocab}`,
          ),
        );
      }
    }
    const biased = sampling.logit_bias?.find(([id]) => id >= vocab);
    if (biased !== undefined) {
      return refuse(
        new JobError(
          "invalid_request",
          `logit_bias token id ${biased[0]} is outside the vocabulary of ${vocab}`,
        ),
      );
    }
    let structured: Pick<SequenceLimits, "json" | "regex" | "grammar">;
    try {
      structured = structuredOutputOf(sampling.response_format);
    } catch (error) {
      return refuse(new JobError("invalid_request", `response_format: ${(error as Error).message}`));
    }
    const tags = sampling.reasoning_tags;
    if (tags && !structured.json && !structured.regex && !structured.grammar) {
      return refuse(
        new JobError("invalid_request", "reasoning_tags come only with a structured response_format"),
      );
    }
    const tagOutside = tags && [tags.open, tags.close].find((id) => id !== null && id >= vocab);
    if (tagOutside != null) {
      return refuse(
        new JobError(
          "invalid_request",
          `reasoning tag token id ${tagOutside} is outside the vocabulary of ${vocab}`,
        ),
      );
    }
    let firstTokenSent = false;
    const job: Job = {
      id: request.id,
      org: request.org,
      adapter: request.adapter,
      promptTokens: request.prompt_token_ids,
      sampling: {
        temperature: sampling.temperature,
        topP: sampling.top_p,
        topK: sampling.top_k,
        minP: sampling.min_p,
        seed: sampling.seed,
        presencePenalty: sampling.presence_penalty,
        frequencyPenalty: sampling.frequency_penalty,
        repetitionPenalty: sampling.repetition_penalty,
        ...(sampling.logit_bias ? { logitBias: new Map(sampling.logit_bias) } : {}),
        topLogprobs: sampling.logprobs ? sampling.top_logprobs : null,
      },
      limits: {
        maxTokens: sampling.max_tokens,
        stopTokenIds: [
          ...new Set([
            ...(sampling.ignore_eos ? [] : this.tokenizer.eosTokenIds),
            ...sampling.stop_token_ids,
          ]),
        ],
        minTokens: sampling.min_tokens,
        stopStrings: sampling.stop,
        ...(sampling.include_stop_str_in_output ? { includeStopStrings: true } : {}),
        ...(sampling.allowed_token_ids ? { allowedTokenIds: sampling.allowed_token_ids } : {}),
        ...(sampling.bad_words_ids ? { badWordsIds: sampling.bad_words_ids } : {}),
        ...structured,
        ...(tags ? { reasoning: tags } : {}),
      },
      ...(request.batch ? { batch: true } : {}),
      ...(request.priority ? { priority: true } : {}),
      ...(sampling.prompt_logprobs !== null ? { promptLogprobs: sampling.prompt_logprobs } : {}),
      onToken: (token, text) => {
        if (token && !firstTokenSent) {
          firstTokenSent = true;
          const tier = request.priority ? "priority" : request.batch ? "batch" : "standard";
          this.metrics.observeFirstToken(tier, request.created_at);
        }
        replies.send(token, text);
      },
      onPromptLogprobs: (entries) => replies.sendPromptLogprobs(entries),
    };
    return this.scheduler.submit(job);
  }

  private async shutDown(): Promise<void> {
    this.draining = true;
    this.log.info({ held: this.held.size }, "draining: no more pulls; finishing what runs");
    // A usage event that cannot be stored now (NATS down) waits on the spool for the next start rather than
    // holding the drain up.
    const usageClosed = this.usage.close();
    for (const wake of this.roomWaiters.splice(0)) wake();
    await Promise.all([...this.pullers].map((puller) => puller.close()));
    const handedBack = this.scheduler.handBack();
    if (handedBack.length > 0) this.log.info({ requests: handedBack }, "handed back for redelivery");
    // Leaving the heartbeat bucket now (not after its TTL) stops gateways routing here and lets the
    // base's other workers adopt this worker's queue, handed-back requests included. The pullers are
    // closed, so none of those can come back here.
    await this.heartbeat?.stop();
    await this.options.bus
      .removeHeartbeat(this.options.base, this.options.workerId)
      .catch((error: Error) => this.log.warn({ err: error }, "leaving the heartbeat bucket failed"));
    while (this.serving.size > 0) await Promise.all([...this.serving]);
    await usageClosed;
    this.controls?.stop();
    await Promise.all(this.subscriptions.map((s) => s.close()));
    await new Promise<void>((resolve) =>
      this.metricsServer ? this.metricsServer.close(() => resolve()) : resolve(),
    );
    await this.manager.close();
    await this.engine.close();
    this.log.info("drained");
  }
}

/**
 * What a request's output follows, compiled: a JSON schema (JsonSchemaError for one outside the subset),
 * a regex's automaton (PatternError) or a grammar, its start made (GrammarError); nothing for text.
 */
function structuredOutputOf(
  format: SamplingParams["response_format"],
): Pick<SequenceLimits, "json" | "regex" | "grammar"> {
  if (format === undefined || format === "text") return {};
  if (format === "json_object") return { json: ANY_OBJECT };
  if ("regex" in format) return { regex: compileFullMatch(format.regex) };
  if ("grammar" in format) {
    const grammar = compileGrammar(format.grammar, format.syntax);
    startOf(grammar);
    return { grammar };
  }
  return { json: compileJsonSchema(format.json_schema) };
}
