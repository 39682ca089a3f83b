// One request's run on a worker, from the gateway's side: pick the worker from live heartbeats, open the
// reply inbox before publishing (so no reply can be missed), publish, then read token chunks in sequence
// until the Final. Cancelling (client gone, deadline passed) publishes one cancel to the worker and closes
// the inbox at once, so a worker that has not claimed the request yet finds nobody waiting and drops it.
// If the chosen worker has not claimed the request within the claim timeout, a copy goes to the base's
// shared queue; the inbox serves whichever copy is claimed first and refuses the other, so never both run.
import type { Bus, ReplyInbox } from "../bus/bus.ts";
import { WorkerLostError } from "../bus/reply-inbox.ts";
import type { AdapterRef, Final, InferenceRequest, TokenChunk, TokenLogprob } from "../schema/wire.ts";
import { ANY_WORKER, WIRE_VERSION } from "../schema/wire.ts";
import type { Admitted } from "./admission.ts";
import type { Principal } from "./auth.ts";
import type { GatewayMetrics } from "./deps.ts";
import { ApiError, fromWireError, noWorker, upstreamTimeout } from "./errors.ts";
import { type RoutingOptions, routeRequest, routingDefaults } from "./routing.ts";

export interface GenerationOptions {
  bus: Bus;
  routing?: RoutingOptions;
  /** How long a request may take end to end before it is cancelled and answered with 504. */
  timeoutMs: number;
  /** Retry-After of the 503 sent when no worker serves the base. */
  retryAfterSeconds: number;
  now: () => number;
  /** Routing outcomes and generations in flight. */
  metrics?: GatewayMetrics | null;
}

export interface GenerationTarget {
  requestId: string;
  caller: Principal;
  base: string;
  adapter: AdapterRef | null;
  admitted: Admitted;
}

/** The client went away (or the deadline passed) and the run was cancelled; nobody reads the result. */
export class GenerationCancelled extends Error {
  override readonly name = "GenerationCancelled";
}

export async function startGeneration(options: GenerationOptions, target: GenerationTarget) {
  const { bus } = options;
  const heartbeats = await bus.liveHeartbeats(target.base);
  const decision = routeRequest(heartbeats, target.adapter?.name ?? null, target.requestId, options.routing);
  if (decision === null) throw noWorker(target.base, options.retryAfterSeconds);
  const { workerId } = decision;
  const inbox = await bus.openReplyInbox();
  const now = options.now();
  const request: InferenceRequest = {
    v: WIRE_VERSION,
    id: target.requestId,
    org: target.caller.orgId,
    api_key_id: target.caller.keyId,
    base: target.base,
    adapter: target.adapter,
    prompt_token_ids: target.admitted.promptTokenIds,
    sampling: target.admitted.sampling,
    reply: inbox.subject,
    created_at: now,
    deadline: now + options.timeoutMs,
  };
  try {
    await bus.publishRequest(request, workerId);
  } catch (error) {
    inbox.close();
    throw error;
  }
  const { metrics } = options;
  metrics?.routed(target.base, decision.outcome);
  const stream = target.admitted.stream;
  metrics?.inFlight(target.base, stream, 1);
  let ended = false;
  const generation = new Generation(bus, request, workerId, inbox, options.timeoutMs, () => {
    if (!ended) metrics?.inFlight(target.base, stream, -1);
    ended = true;
  });
  if (workerId !== ANY_WORKER) {
    void generation.copyToAnyUnlessClaimed(options.routing?.claimTimeoutMs ?? routingDefaults.claimTimeoutMs);
  }
  return generation;
}

export class Generation {
  #finished = false;
  #cancelled = false;
  #timedOut = false;
  readonly #timer: ReturnType<typeof setTimeout>;

  constructor(
    private readonly bus: Bus,
    readonly request: InferenceRequest,
    /** The worker the request was published to, or "any". */
    readonly workerId: string,
    private readonly inbox: ReplyInbox,
    private readonly timeoutMs: number,
    /** Called once, when the run ends: finished or cancelled. */
    private readonly onEnd: () => void = () => {},
  ) {
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.cancel();
    }, timeoutMs);
  }

  get requestId(): string {
    return this.request.id;
  }

  /**
   * Waits up to `timeoutMs` for a worker to claim the request; if none did and the run goes on, sends a
   * copy to the base's shared queue. Resolves with the copy's reply subject, or null when none was sent.
   */
  async copyToAnyUnlessClaimed(timeoutMs: number): Promise<string | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const claimed = await Promise.race([this.inbox.claimed(), timedOut]);
    clearTimeout(timer);
    if (claimed !== "timeout" || this.#finished || this.#cancelled) return null;
    try {
      const reply = await this.inbox.openCopy();
      await this.bus.publishRequest({ ...this.request, reply }, ANY_WORKER);
      return reply;
    } catch {
      // The inbox closed meanwhile, or the bus refused the copy: the original is still queued for its
      // worker, and the request's deadline bounds the wait either way.
      return null;
    }
  }

  /**
   * The token chunks in order, then the Final as the return value. Throws an ApiError for a worker's
   * error, a gap in the chunks, or the deadline; GenerationCancelled once cancel() was called. Leaving
   * the iteration early cancels the run.
   */
  async *chunks(): AsyncGenerator<TokenChunk, Final, void> {
    let seq = 0;
    let delivered = 0;
    try {
      for await (const reply of this.inbox) {
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
        if (reply.finish_reason === "error") throw fromWireError(reply.error!);
        if (reply.finish_reason === "cancelled") {
          throw new ApiError(503, "server_error", "The worker cancelled the request.", "cancelled");
        }
        return reply;
      }
    } catch (error) {
      if (error instanceof WorkerLostError) await this.#billLostStream(delivered);
      throw error;
    } finally {
      if (!this.#finished) this.cancel();
    }
    if (this.#timedOut) throw upstreamTimeout(Math.round(this.timeoutMs / 1000));
    throw new GenerationCancelled(`request ${this.request.id} was cancelled`);
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

/** A whole reply for a non-streaming answer: the text, every token's logprobs (when asked for) and the Final. */
export async function collectReply(
  chunks: AsyncGenerator<TokenChunk, Final, void>,
): Promise<{ text: string; logprobs: TokenLogprob[]; final: Final }> {
  let text = "";
  const logprobs: TokenLogprob[] = [];
  let step = await chunks.next();
  while (!step.done) {
    text += step.value.text;
    if (step.value.logprobs) logprobs.push(...step.value.logprobs);
    step = await chunks.next();
  }
  return { text, logprobs, final: step.value };
}
