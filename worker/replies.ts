// One request's reply as the worker sends it: first a claim (may this worker stream it?), then token chunks
// numbered 0, 1, 2, ... to the request's inbox, and at the end exactly one usage event followed by the
// Final. The usage event goes first: once it is stored, the request is billed whatever happens to this
// process, and the Final tells the gateway it has everything.
import type { Bus } from "../bus/bus.ts";
import { logger } from "../core/logger.ts";
import {
  type FinishReason,
  type InferenceRequest,
  type TokenLogprob,
  type UsageEvent,
  WIRE_VERSION,
} from "../schema/wire.ts";
import type { SampledToken } from "./engine/sampler.ts";
import type { Tokenizer } from "./engine/tokenizer.ts";

export interface ReplyEnd {
  finishReason: FinishReason;
  /** Required when finishReason is "error". */
  error?: { code: string; message: string };
  /** Prompt tokens the engine processed (0 when the request never ran). */
  promptTokens: number;
  /** Tokens generated, stop token included. */
  outputTokens: number;
}

/**
 * Pauses between attempts at storing a usage event: growing from `firstMs` to at most `maxMs`. Attempts go
 * on for as long as the process lives — a NATS outage of any length loses no usage (JetStream drops the
 * duplicates retries may make) — and the request stays unacked meanwhile, so a drain waits for them.
 */
export interface UsageRetry {
  firstMs: number;
  maxMs: number;
}

const USAGE_RETRY: UsageRetry = { firstMs: 250, maxMs: 5_000 };
/** After the first failure, one warning per this many attempts, not one per attempt. */
const WARN_EVERY = 10;

export class ReplyStream {
  private seq = 0;
  private readonly startedMs = Date.now();
  private readonly utf8 = new TextEncoder();

  constructor(
    private readonly bus: Bus,
    private readonly request: InferenceRequest,
    private readonly workerId: string,
    private readonly tokenizer: Tokenizer,
    private readonly usageRetry: UsageRetry = USAGE_RETRY,
  ) {}

  /** Chunks sent so far. */
  get chunks(): number {
    return this.seq;
  }

  /**
   * Asks the gateway whether this worker may stream the reply. False when nobody waits any more or another
   * worker's tokens already went out: the caller then drops the request without a word.
   */
  claim(): Promise<boolean> {
    return this.bus.claimReply(this.request.reply, {
      v: WIRE_VERSION,
      request_id: this.request.id,
      worker_id: this.workerId,
    });
  }

  /** Sends one generated token (or, with token null, text held back until the end) as the next chunk. */
  send(token: SampledToken | null, text: string): void {
    const wantsLogprobs = this.request.sampling.logprobs && token !== null;
    this.bus.publishReply(this.request.reply, {
      v: WIRE_VERSION,
      type: "chunk",
      request_id: this.request.id,
      seq: this.seq++,
      token_ids: token ? [token.token] : [],
      text,
      ...(wantsLogprobs ? { logprobs: [this.logprob(token)] } : {}),
    });
  }

  /** Stores the usage event, then sends the Final. */
  async finish(end: ReplyEnd): Promise<void> {
    const usage: UsageEvent = {
      v: WIRE_VERSION,
      request_id: this.request.id,
      org: this.request.org,
      api_key_id: this.request.api_key_id,
      base: this.request.base,
      adapter: this.request.adapter?.name ?? null,
      input_tokens: end.promptTokens,
      output_tokens: end.outputTokens,
      finish_reason: end.finishReason,
      started_ms: this.startedMs,
      finished_ms: Math.max(this.startedMs, Date.now()),
    };
    await this.storeUsage(usage);
    this.bus.publishReply(this.request.reply, {
      v: WIRE_VERSION,
      type: "final",
      request_id: this.request.id,
      seq: this.seq,
      finish_reason: end.finishReason,
      usage: { prompt_tokens: end.promptTokens, completion_tokens: end.outputTokens },
      ...(end.finishReason === "error"
        ? { error: end.error ?? { code: "internal_error", message: "the worker failed this request" } }
        : {}),
    });
  }

  private async storeUsage(usage: UsageEvent): Promise<void> {
    const { firstMs, maxMs } = this.usageRetry;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.bus.publishUsage(usage);
        if (attempt > 1) logger.info({ request: usage.request_id, attempt }, "usage event stored");
        return;
      } catch (error) {
        if (attempt % WARN_EVERY === 1) {
          logger.warn(
            { err: error, request: usage.request_id, attempt },
            "storing a usage event failed; retrying until it is stored",
          );
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(maxMs, firstMs * attempt)));
      }
    }
  }

  private logprob(token: SampledToken): TokenLogprob {
    const entry = (id: number, logprob: number) => {
      const text = this.tokenizer.decode([id]);
      return { token: text, bytes: [...this.utf8.encode(text)], logprob: Math.min(0, logprob) };
    };
    return {
      ...entry(token.token, token.logprob),
      token_id: token.token,
      top: token.top.map((t) => entry(t.token, t.logprob)),
    };
  }
}
