// One request's reply as the worker sends it: first a claim (may this worker stream it?), then token chunks
// numbered 0, 1, 2, ... to the request's inbox, and at the end exactly one usage event followed by the
// Final. The usage event goes first: once it is stored, the request is billed whatever happens to this
// process, and the Final tells the gateway it has everything.
import type { Bus } from "../bus/bus.ts";
import {
  type FinishReason,
  type InferenceRequest,
  type PromptTokenLogprob,
  type ReplyClaim,
  type TokenLogprob,
  type UsageEvent,
  WIRE_VERSION,
} from "../schema/wire.ts";
import type { PromptTokenLogprob as PromptLogprob } from "./engine/prompt-logprobs.ts";
import type { SampledToken } from "./engine/sampler.ts";
import { tokenText } from "./engine/token-bytes.ts";
import type { Tokenizer } from "./engine/tokenizer.ts";
import type { UsageSender } from "./usage-sender.ts";

export interface ReplyEnd {
  finishReason: FinishReason;
  /** Required when finishReason is "error". */
  error?: { code: string; message: string };
  /** Prompt tokens the engine processed (0 when the request never ran). */
  promptTokens: number;
  /** Of promptTokens, those the engine's prefix cache covered. */
  cachedPromptTokens: number;
  /** Tokens generated, stop token included. */
  outputTokens: number;
}

export class ReplyStream {
  private seq = 0;
  private readonly startedMs = Date.now();

  constructor(
    private readonly bus: Bus,
    private readonly request: InferenceRequest,
    private readonly claimant: { workerId: string; incarnation: string },
    private readonly tokenizer: Tokenizer,
    private readonly usage: UsageSender,
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
    return this.bus.claimReply(this.request.reply, this.claimMessage());
  }

  /** Whether the gateway still waits for the reply: false once it says nobody does or it is gone. */
  stillWanted(): Promise<boolean> {
    return this.bus.replyWanted(this.request.reply, this.claimMessage());
  }

  private claimMessage(): ReplyClaim {
    return {
      v: WIRE_VERSION,
      request_id: this.request.id,
      worker_id: this.claimant.workerId,
      incarnation: this.claimant.incarnation,
    };
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

  /** Sends prompt tokens' logprobs (those of one prefill piece) as the next chunk, with no generated token. */
  sendPromptLogprobs(entries: readonly PromptLogprob[]): void {
    if (entries.length === 0) return;
    this.bus.publishReply(this.request.reply, {
      v: WIRE_VERSION,
      type: "chunk",
      request_id: this.request.id,
      seq: this.seq++,
      token_ids: [],
      text: "",
      prompt_logprobs: entries.map(
        (e): PromptTokenLogprob => ({
          ...this.logprob(e),
          rank: e.rank,
          top: e.top.map((t) => ({ ...this.entry(t.token, t.logprob), token_id: t.token })),
        }),
      ),
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
      cached_input_tokens: end.cachedPromptTokens,
      output_tokens: end.outputTokens,
      ...(this.request.batch ? { batch: true } : {}),
      ...(this.request.priority ? { priority: true } : {}),
      finish_reason: end.finishReason,
      started_ms: this.startedMs,
      finished_ms: Math.max(this.startedMs, Date.now()),
    };
    await this.usage.send(usage);
    this.bus.publishReply(this.request.reply, {
      v: WIRE_VERSION,
      type: "final",
      request_id: this.request.id,
      seq: this.seq,
      finish_reason: end.finishReason,
      usage: {
        prompt_tokens: end.promptTokens,
        completion_tokens: end.outputTokens,
        cached_tokens: end.cachedPromptTokens,
      },
      ...(end.finishReason === "error"
        ? { error: end.error ?? { code: "internal_error", message: "the worker failed this request" } }
        : {}),
    });
  }

  private logprob(token: SampledToken): TokenLogprob {
    return {
      ...this.entry(token.token, token.logprob),
      token_id: token.token,
      top: token.top.map((t) => this.entry(t.token, t.logprob)),
    };
  }

  private entry(id: number, logprob: number): { token: string; bytes: number[]; logprob: number } {
    const bytes = this.tokenizer.tokenBytes(id);
    return { token: tokenText(bytes), bytes: [...bytes], logprob: Math.min(0, logprob) };
  }
}
