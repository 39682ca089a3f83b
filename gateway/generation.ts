// A request's runs on a worker (one per choice, OpenAI's n), from the gateway's side: pick the worker from
// live heartbeats, open each run's reply inbox before publishing (so no reply can be missed), publish, then
// read each run's token chunks in sequence until its Final (gateway/choices.ts reads a request's runs
// together). Cancelling (client gone, deadline passed) publishes one cancel to the worker and closes
// the inbox at once, so a worker that has not claimed the request yet finds nobody waiting and drops it.
// If the chosen worker has not claimed the request within the claim timeout, a copy goes to the base's
// shared queue; the inbox serves whichever copy is claimed first and refuses the other, so never both run.
// A base with no live worker at all (scaled to zero) gets its request on the shared queue too, where it
// waits for a worker to start (awaitColdStart); if none claims it in time the run is cancelled, and the
// closed inbox refuses the claim of a worker that pulls it later, so it never runs and is never billed.
import type { Bus, QueuedRequest, ReplyInbox } from "../bus/bus.ts";
import { WorkerLostError } from "../bus/reply-inbox.ts";
import type {
  AdapterRef,
  Final,
  InferenceRequest,
  PromptTokenLogprob,
  TokenChunk,
  TokenLogprob,
} from "../schema/wire.ts";
import { ANY_WORKER, WIRE_VERSION } from "../schema/wire.ts";
import { type Admitted, runCount, runPrompt } from "./admission.ts";
import type { Principal } from "./auth.ts";
import type { GatewayMetrics } from "./deps.ts";
import { ApiError, fromWireError, noWorker, noWorkerStarted, upstreamTimeout } from "./errors.ts";
import type { RecentRoutes } from "./recent-routes.ts";
import { type RoutingOptions, routeRequest, routingDefaults } from "./routing.ts";
import { TIMED_OUT, within } from "./within.ts";

export interface GenerationOptions {
  bus: Bus;
  routing?: RoutingOptions;
  /** How long a request may take end to end before it is cancelled and answered with 504. */
  timeoutMs: number;
  /** Retry-After of the 503 sent when no worker serves the base. */
  retryAfterSeconds: number;
  /**
   * How long a request for a base with no live worker waits on the shared queue for one to start and claim
   * it (bounded by timeoutMs); 0 answers 503 at once without queueing it.
   */
  coldStartTimeoutMs: number;
  now: () => number;
  /** Routing outcomes and generations in flight. */
  metrics?: GatewayMetrics | null;
  /** What this gateway sent each worker since its heartbeat, which routing counts as queued there. */
  recentRoutes?: RecentRoutes;
}

export interface GenerationTarget {
  requestId: string;
  caller: Principal;
  base: string;
  adapter: AdapterRef | null;
  admitted: Admitted;
  /** A Batch API line (the batch runner's request) or a flex request: billed at the base's batch price. */
  batch?: boolean;
  /** A priority-tier request: admitted first on the worker, billed at the base's priority price. */
  priority?: boolean;
}

/** The client went away (or the deadline passed) and the run was cancelled; nobody reads the result. */
export class GenerationCancelled extends Error {
  override readonly name = "GenerationCancelled";
}

/**
 * How a wait for a worker of a base with none live ended: a worker claimed the request, the cold-start
 * timeout passed first, or the run was cancelled meanwhile (the client left, or the request's deadline).
 */
export type ColdStartOutcome = "claimed" | "timeout" | "cancelled";

/** The request id of choice `index` of a request: the request's own for the first, `<id>-<index>` after. */
export function choiceRequestId(requestId: string, index: number): string {
  return index === 0 ? requestId : `${requestId}-${index}`;
}

/**
 * Choice `index`'s seed: the request's plus the index (minus, past the largest safe integer), so each
 * choice draws differently and choice i of a seeded request equals a one-choice request with that seed.
 */
export function choiceSeed(seed: number | null, index: number): number | null {
  if (seed === null) return null;
  return seed <= Number.MAX_SAFE_INTEGER - index ? seed + index : seed - index;
}

/**
 * Routes and publishes the request: one run per choice (`admitted.choices`, OpenAI's n) of each prompt
 * (several only in legacy completions: admission.ts runPrompt), each its own request on the bus
 * (choiceRequestId by run, choiceSeed by choice) to the same worker, where the later choices find the
 * first one's prompt in the prefix cache. With no live worker for the base, the runs go to the base's
 * shared queue to wait for one (the caller then awaits awaitColdStart), unless cold starts are off.
 */
export async function startGenerations(options: GenerationOptions, target: GenerationTarget) {
  const { bus } = options;
  const beats = await bus.liveHeartbeats(target.base);
  const heartbeats = options.recentRoutes?.withSentSinceBeat(beats) ?? beats;
  // Placed by the org, or by the org's prompt_cache_key where the request names one (prefix-cache
  // affinity, routing.ts: an org's prompts that share a prefix meet on one worker, and an org with many
  // such families spreads them); a residency-blind router spreads adapter requests by id instead.
  const { orgId } = target.caller;
  const cacheKey = target.admitted.cacheKey;
  const key =
    target.adapter && options.routing?.residencyBlind
      ? target.requestId
      : cacheKey
        ? `${orgId}\u0000${cacheKey}`
        : orgId;
  const decision = routeRequest(heartbeats, target.adapter?.name ?? null, key, options.routing);
  if (decision === null && coldStartWaitMs(options) <= 0) {
    throw noWorker(target.base, options.retryAfterSeconds);
  }
  const workerId = decision?.workerId ?? ANY_WORKER;
  // Counted on the worker at once, before this request's publish lets another request route.
  const ended = Array.from({ length: runCount(target.admitted) }, () =>
    workerId !== ANY_WORKER && options.recentRoutes ? options.recentRoutes.sent(workerId) : () => {},
  );
  const generations: Generation[] = [];
  const publish = (index: number) =>
    publishChoice(options, target, workerId, decision === null, index, ended[index]!);
  try {
    // The first choice goes first, so a worker meets its prompt before the others and the rest take its
    // prefix from the cache; the others then go out together, not one publish acknowledgement at a time.
    generations.push(await publish(0));
    const rest = await Promise.allSettled(
      Array.from({ length: runCount(target.admitted) - 1 }, (_, k) => publish(k + 1)),
    );
    for (const outcome of rest) if (outcome.status === "fulfilled") generations.push(outcome.value);
    const failed = rest.find((outcome) => outcome.status === "rejected");
    if (failed) throw failed.reason;
  } catch (error) {
    for (const generation of generations) generation.cancel();
    for (const end of ended) end();
    throw error;
  }
  if (decision) options.metrics?.routed(target.base, decision.outcome);
  if (workerId !== ANY_WORKER) {
    const claimTimeoutMs = options.routing?.claimTimeoutMs ?? routingDefaults.claimTimeoutMs;
    for (const generation of generations) void generation.copyToAnyUnlessClaimed(claimTimeoutMs);
  }
  return generations;
}

async function publishChoice(
  options: GenerationOptions,
  target: GenerationTarget,
  workerId: string,
  coldStart: boolean,
  index: number,
  /** Called once the run ends (RecentRoutes). */
  onRunEnd: () => void,
): Promise<Generation> {
  const { bus, metrics } = options;
  const { sampling } = target.admitted;
  const { prompt, choice } = runPrompt(target.admitted, index);
  const inbox = await bus.openReplyInbox();
  const now = options.now();
  const request: InferenceRequest = {
    v: WIRE_VERSION,
    id: choiceRequestId(target.requestId, index),
    org: target.caller.orgId,
    api_key_id: target.caller.keyId,
    base: target.base,
    adapter: target.adapter,
    prompt_token_ids: prompt.tokenIds,
    sampling: {
      ...sampling,
      max_tokens: prompt.maxTokens,
      seed: choiceSeed(sampling.seed, choice),
      // A prompt is scored once, by its first choice's run, unless every answer echoes it as it streams.
      prompt_logprobs: choice === 0 || prompt.echo !== undefined ? sampling.prompt_logprobs : null,
    },
    reply: inbox.subject,
    created_at: now,
    deadline: now + options.timeoutMs,
    ...(target.batch ? { batch: true } : {}),
    ...(target.priority ? { priority: true } : {}),
  };
  let queued: QueuedRequest;
  try {
    queued = await bus.publishRequest(request, workerId);
  } catch (error) {
    inbox.close();
    throw error;
  }
  const stream = target.admitted.stream;
  metrics?.inFlight(target.base, stream, 1);
  let ended = false;
  return new Generation(
    bus,
    request,
    workerId,
    inbox,
    queued,
    options.timeoutMs,
    () => {
      if (!ended) metrics?.inFlight(target.base, stream, -1);
      ended = true;
      onRunEnd();
    },
    coldStart,
    (final) => metrics?.tokens(target.base, final.usage),
    options.routing?.lostWorkerAfterMs ?? routingDefaults.lostWorkerAfterMs,
  );
}

function coldStartWaitMs(options: GenerationOptions): number {
  return Math.min(options.coldStartTimeoutMs, options.timeoutMs);
}

/**
 * For a request queued while its base had no live worker: resolves once a worker has started and claimed
 * it. Throws 503 (no_worker) when none did within the cold-start timeout, having cancelled the run so a
 * worker that pulls it later is refused; or the cancellation's error when the run ended meanwhile.
 * Resolves at once for a request routed to a live worker.
 */
export async function awaitColdStart(options: GenerationOptions, generation: Generation): Promise<void> {
  if (!generation.coldStart) return;
  const waitMs = coldStartWaitMs(options);
  const outcome = await generation.claimWithin(waitMs);
  const { base } = generation.request;
  options.metrics?.coldStart(base, outcome);
  if (outcome === "timeout") throw noWorkerStarted(base, waitMs / 1000, options.retryAfterSeconds);
  if (outcome === "cancelled") throw generation.cancellation();
}

export class Generation {
  #finished = false;
  #cancelled = false;
  #timedOut = false;
  readonly #timer: ReturnType<typeof setTimeout>;
  /** The request's messages that may still wait on a queue, by reply subject: the original, and its copy once sent. */
  readonly #queued = new Map<string, QueuedRequest>();

  constructor(
    private readonly bus: Bus,
    readonly request: InferenceRequest,
    /** The worker the request was published to, or "any". */
    readonly workerId: string,
    private readonly inbox: ReplyInbox,
    /** The original's publish. */
    queued: QueuedRequest,
    private readonly timeoutMs: number,
    /** Called once, when the run ends: finished or cancelled. */
    private readonly onEnd: () => void = () => {},
    /** Queued on the shared queue while the base had no live worker: awaitColdStart waits for one. */
    readonly coldStart = false,
    /** Called with the run's Final when it arrives, whatever its finish reason. */
    private readonly onFinal: (final: Final) => void = () => {},
    /** RoutingOptions.lostWorkerAfterMs. */
    private readonly lostWorkerAfterMs = routingDefaults.lostWorkerAfterMs,
  ) {
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.cancel();
    }, timeoutMs);
    this.#queued.set(inbox.subject, queued);
    void inbox.claimed().then(() => this.#withdrawLosers());
  }

  get requestId(): string {
    return this.request.id;
  }

  /**
   * Waits up to `timeoutMs` for a worker to claim the request; if none did and the run goes on, sends a
   * copy to the base's shared queue. Resolves with the copy's reply subject, or null when none was sent.
   */
  async copyToAnyUnlessClaimed(timeoutMs: number): Promise<string | null> {
    const claimed = await within(this.inbox.claimed(), timeoutMs);
    if (claimed !== TIMED_OUT || this.#finished || this.#cancelled) return null;
    try {
      const reply = await this.inbox.openCopy();
      this.#queued.set(reply, await this.bus.publishRequest({ ...this.request, reply }, ANY_WORKER));
      // The original may have been claimed, or the run ended, while the copy was on its way.
      this.#withdrawLosers();
      return reply;
    } catch {
      // The inbox closed meanwhile, or the bus refused the copy: the original is still queued for its
      // worker, and the request's deadline bounds the wait either way.
      return null;
    }
  }

  /**
   * Takes off their queues the messages of this request that can no longer run: once a copy is claimed,
   * the others; once the run ended unclaimed, all. Left there, each would count in the autoscaler's backlog
   * (Bus.requestBacklog) until some worker pulled it and was refused: a copied request counted twice.
   */
  #withdrawLosers(): void {
    const winner = this.inbox.claimedSubject;
    if (winner === null && !this.inbox.closed) return;
    for (const [subject, queued] of this.#queued) {
      if (subject === winner) continue;
      this.#queued.delete(subject);
      void queued.withdraw();
    }
  }

  /**
   * Waits until a worker claims the request: "claimed". After `timeoutMs` without a claim the run is
   * cancelled, so every later claim is refused: "timeout". "cancelled" when it was cancelled before.
   */
  async claimWithin(timeoutMs: number): Promise<ColdStartOutcome> {
    let timedOut = false;
    // Cancelling closes the inbox, which ends the wait below; a claim is answered on arrival, so it
    // lands either before the close (and is served) or after it (and is refused), never both.
    const timer = setTimeout(() => {
      timedOut = !this.#cancelled && !this.#finished;
      this.cancel();
    }, timeoutMs);
    const worker = await this.inbox.claimed();
    clearTimeout(timer);
    if (worker !== null) return "claimed";
    return timedOut ? "timeout" : "cancelled";
  }

  /** Why a run ended without its Final: the deadline (504), or else a cancel. */
  cancellation(): Error {
    if (this.#timedOut) return upstreamTimeout(Math.round(this.timeoutMs / 1000));
    return new GenerationCancelled(`request ${this.request.id} was cancelled`);
  }

  /**
   * The token chunks in order, then the Final as the return value. Throws an ApiError for a worker's
   * error, a gap in the chunks, or the deadline; GenerationCancelled once cancel() was called. Leaving
   * the iteration early cancels the run. `streamed`: each chunk reaches the client as it is yielded; a
   * run lost to its worker is billed the chunks delivered so, and none where the client gets the whole
   * answer or nothing.
   */
  async *chunks(streamed = true): AsyncGenerator<TokenChunk, Final, void> {
    let seq = 0;
    let delivered = 0;
    let lastChunkAt = Date.now();
    const watch = this.#watchWorker(
      () => (seq > 0 ? lastChunkAt : null),
      () => seq,
    );
    try {
      for await (const reply of this.inbox) {
        lastChunkAt = Date.now();
        if (reply.seq !== seq) {
          throw new ApiError(
            502,
            "server_error",
            `The worker's reply lost part of its tokens (expected chunk ${seq}, got ${reply.seq}).`,
            "reply_incomplete",
          );
        }
        if (reply.type === "chunk") {
          seq++;
          delivered += reply.token_ids.length;
          yield reply;
          continue;
        }
        this.#finish();
        this.onFinal(reply);
        if (reply.finish_reason === "error") throw fromWireError(reply.error!);
        if (reply.finish_reason === "cancelled") {
          throw new ApiError(503, "server_error", "The worker cancelled the request.", "cancelled");
        }
        return reply;
      }
    } catch (error) {
      if (error instanceof WorkerLostError) await this.#billLostStream(streamed ? delivered : 0);
      throw error;
    } finally {
      clearInterval(watch);
      if (!this.#finished) this.cancel();
    }
    throw this.cancellation();
  }

  /**
   * Ends the run as worker_lost once its worker, after streaming, has been silent for lostWorkerAfterMs and
   * is not among the live workers. Silence alone is not enough (a draining worker has left the live set but
   * still streams); absence alone is not either (a heartbeat may be late).
   */
  #watchWorker(streamingSince: () => number | null, chunks: () => number): ReturnType<typeof setInterval> {
    const timer = setInterval(async () => {
      const lastChunkAt = streamingSince();
      if (lastChunkAt === null || Date.now() - lastChunkAt < this.lostWorkerAfterMs) return;
      const worker = await this.inbox.claimed();
      // Not connected: every worker would look dead; the bus's own error ends the run if it stays so.
      const live = await this.bus.liveHeartbeats(this.request.base).catch(() => null);
      if (worker === null || live === null || live.some((beat) => beat.worker_id === worker)) return;
      this.inbox.fail(new WorkerLostError(this.request.id, worker, null, chunks()));
    }, this.lostWorkerAfterMs / 4);
    timer.unref();
    return timer;
  }

  /** Stops the run: the worker is told once, and iteration ends. Does nothing once the Final arrived. */
  cancel(): void {
    if (this.#finished || this.#cancelled) return;
    this.#cancelled = true;
    clearTimeout(this.#timer);
    this.onEnd();
    this.inbox.close();
    this.bus.publishCancel(this.request.base, { v: WIRE_VERSION, request_id: this.request.id });
  }

  /**
   * A worker that died after its tokens went out never sends its usage event, and the request is not run
   * again; only the gateway knows what reached the client, so it bills that. The request id keys the
   * event, so should the worker's own event exist after all, the two count once.
   */
  async #billLostStream(outputTokens: number): Promise<void> {
    const { request } = this;
    await this.bus.publishUsage({
      v: WIRE_VERSION,
      request_id: request.id,
      org: request.org,
      api_key_id: request.api_key_id,
      base: request.base,
      adapter: request.adapter?.name ?? null,
      input_tokens: request.prompt_token_ids.length,
      output_tokens: outputTokens,
      ...(request.batch ? { batch: true } : {}),
      ...(request.priority ? { priority: true } : {}),
      finish_reason: "error",
      started_ms: request.created_at,
      finished_ms: Math.max(Date.now(), request.created_at),
    });
  }

  #finish(): void {
    this.#finished = true;
    clearTimeout(this.#timer);
    this.onEnd();
    this.inbox.close();
  }
}

/** A whole reply for a non-streaming answer: the text, every token's logprobs (when asked for), its chunks and the Final. */
export async function collectReply(chunks: AsyncGenerator<TokenChunk, Final, void>): Promise<CollectedReply> {
  let text = "";
  const logprobs: TokenLogprob[] = [];
  const promptLogprobs: PromptTokenLogprob[] = [];
  const pieces: ReplyPiece[] = [];
  let step = await chunks.next();
  while (!step.done) {
    if (step.value.prompt_logprobs) promptLogprobs.push(...step.value.prompt_logprobs);
    else {
      text += step.value.text;
      pieces.push({ text: step.value.text, tokens: step.value.token_ids.length });
      if (step.value.logprobs) logprobs.push(...step.value.logprobs);
    }
    step = await chunks.next();
  }
  return { text, logprobs, promptLogprobs, pieces, final: step.value };
}

/** One chunk of a reply: its text and how many tokens made it. */
export interface ReplyPiece {
  text: string;
  tokens: number;
}

/** A whole reply: its text, its tokens' logprobs (when asked for), its chunks and its Final. */
export interface CollectedReply {
  text: string;
  logprobs: TokenLogprob[];
  /** The prompt's tokens' from the second on (sampling.prompt_logprobs), else empty. */
  promptLogprobs: PromptTokenLogprob[];
  pieces: ReplyPiece[];
  final: Final;
}
