// Continuous batching over an engine: every step admits waiting sequences (within a token budget, prompts
// of close lengths prefilled in one run) and runs one decode over everything running; finished sequences
// leave at once, so no request waits for another to finish. Sampling, stop conditions and text live in
// sequence-output.ts.
import type { DecodeChoice, DecodeRow } from "./decode-row.ts";
import type { PrefillPrompt } from "./engine.ts";
import { prefillBatches } from "./prefill-batches.ts";
import type { SampledToken, SamplingParams } from "./sampler.ts";
import { decodeChoices, SequenceOutput } from "./sequence-output.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** The engine calls the loop needs; Engine and EngineThread both provide them. */
export interface StepEngine {
  /** ServingEngine.padsPrefills: whether prompts of very different lengths should go in separate runs. */
  readonly padsPrefills: boolean;
  /** Prompts of any lengths, or chunks of them, in one call; each one's last-token logits, in order (ServingEngine). */
  prefillTogether(prompts: readonly PrefillPrompt[]): Promise<Float32Array[]>;
  /** See ServingEngine.decodePicking and logitsOf. */
  decodePicking(
    tokens: ReadonlyMap<string, number>,
    choices: ReadonlyMap<string, DecodeChoice>,
  ): Promise<Map<string, DecodeRow>>;
  logitsOf(id: string): Float32Array | Promise<Float32Array>;
  release(id: string): Promise<void> | void;
}

export type FinishReason = "stop" | "length" | "cancelled";

export interface GenerationRequest {
  id: string;
  promptTokens: readonly number[];
  /** Adapter slot; 0 = the base model. */
  slot: number;
  sampling: SamplingParams;
  maxTokens: number;
  stopTokenIds?: readonly number[];
  stopStrings?: readonly string[];
  /**
   * Called with each token and the text it completes ("" while a character or a possible stop string is
   * incomplete); at the end, once with token null and whatever text was still held back.
   */
  onToken?: (token: SampledToken | null, textDelta: string) => void;
}

export interface GenerationResult {
  id: string;
  tokenIds: number[];
  tokens: SampledToken[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
}

export interface BatcherOptions {
  maxBatch: number;
  maxContext: number;
  /** Prompt tokens prefilled per step, so a burst of long prompts cannot stall running sequences. */
  prefillTokenBudget: number;
}

interface Running {
  request: GenerationRequest;
  output: SequenceOutput;
  cancelled: boolean;
  resolve: (result: GenerationResult) => void;
  reject: (error: Error) => void;
}

export class ContinuousBatcher {
  private readonly waiting: Running[] = [];
  private readonly running = new Map<string, Running>();
  private loop: Promise<void> | null = null;

  constructor(
    private readonly engine: StepEngine,
    private readonly tokenizer: Tokenizer,
    private readonly options: BatcherOptions,
  ) {}

  submit(request: GenerationRequest): Promise<GenerationResult> {
    if (request.promptTokens.length === 0)
      return Promise.reject(new Error(`request ${request.id}: empty prompt`));
    if (request.promptTokens.length >= this.options.maxContext) {
      return Promise.reject(
        new Error(
          `request ${request.id}: prompt of ${request.promptTokens.length} tokens exceeds the ${this.options.maxContext}-token context`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({
        request,
        output: new SequenceOutput(this.tokenizer, request.sampling, request.promptTokens, {
          maxTokens: request.maxTokens,
          maxContext: this.options.maxContext,
          ...(request.stopTokenIds ? { stopTokenIds: request.stopTokenIds } : {}),
          ...(request.stopStrings ? { stopStrings: request.stopStrings } : {}),
        }),
        cancelled: false,
        resolve,
        reject,
      });
      this.start();
    });
  }

  /**
   * Starts the loop unless it runs. A request submitted after the loop's last look but before its promise
   * settled would otherwise wait for the next submit: the loop restarts itself if requests are waiting.
   */
  private start(): void {
    this.loop ??= this.pump().finally(() => {
      this.loop = null;
      if (this.waiting.length > 0) this.start();
    });
  }

  /** Stops a request within one step; it resolves with finish_reason "cancelled" and what it generated. */
  cancel(id: string): void {
    const waitingAt = this.waiting.findIndex((r) => r.request.id === id);
    if (waitingAt >= 0) {
      const [r] = this.waiting.splice(waitingAt, 1);
      r!.resolve(this.result(r!, "cancelled"));
      return;
    }
    const running = this.running.get(id);
    if (running) running.cancelled = true;
  }

  get queueDepth(): number {
    return this.waiting.length;
  }

  get runningCount(): number {
    return this.running.size;
  }

  private async pump(): Promise<void> {
    while (this.waiting.length > 0 || this.running.size > 0) {
      try {
        await this.admit();
        await this.retireCancelled();
        if (this.running.size > 0) await this.decodeStep();
      } catch (error) {
        const e = error instanceof Error ? error : new Error(String(error));
        for (const r of [...this.running.values(), ...this.waiting]) {
          await this.engine.release(r.request.id);
          r.reject(e);
        }
        this.running.clear();
        this.waiting.length = 0;
      }
    }
  }

  private async admit(): Promise<void> {
    let budget = this.options.prefillTokenBudget;
    const admitted: Running[] = [];
    while (this.waiting.length > 0 && this.running.size + admitted.length < this.options.maxBatch) {
      const next = this.waiting[0]!;
      // The first prompt of a step always goes in, however long, so no prompt waits forever.
      if (budget < next.request.promptTokens.length && admitted.length > 0) break;
      this.waiting.shift();
      budget -= next.request.promptTokens.length;
      admitted.push(next);
    }
    // Running from here: a prefill that fails rejects them with the rest (pump).
    for (const r of admitted) this.running.set(r.request.id, r);
    // Prompts of close lengths in one run (prefill-batches.ts).
    const lengths = admitted.map((r) => r.request.promptTokens.length);
    for (const batch of prefillBatches(lengths, this.engine.padsPrefills)) {
      const prompts = batch.map((i) => admitted[i]!);
      const logits = await this.engine.prefillTogether(
        prompts.map(({ request }) => ({ id: request.id, tokens: request.promptTokens, slot: request.slot })),
      );
      for (const [i, r] of prompts.entries()) await this.accept(r, logits[i]!);
    }
  }

  private async decodeStep(): Promise<void> {
    const last = new Map([...this.running].map(([id, r]) => [id, r.output.tokens.at(-1)!.token]));
    const rows = await this.engine.decodePicking(last, decodeChoices(this.running));
    for (const [id, row] of rows) await this.accept(this.running.get(id)!, row);
  }

  private async retireCancelled(): Promise<void> {
    for (const r of [...this.running.values()]) if (r.cancelled) await this.finish(r, "cancelled");
  }

  /** Takes the next token from a decode row, streams it, and finishes the sequence if a stop condition holds. */
  private async accept(r: Running, row: DecodeRow): Promise<void> {
    const { token, text, finish, stopToken } =
      r.output.accept(row) ?? r.output.accept(await this.engine.logitsOf(r.request.id));
    if (!stopToken) r.request.onToken?.(token, text);
    else if (text) r.request.onToken?.(null, text);
    if (finish) await this.finish(r, finish);
  }

  private async finish(r: Running, reason: FinishReason): Promise<void> {
    this.running.delete(r.request.id);
    await this.engine.release(r.request.id);
    if (reason !== "stop") {
      const rest = r.output.flush();
      if (rest) r.request.onToken?.(null, rest);
    }
    r.resolve(this.result(r, reason));
  }

  private result(r: Running, finishReason: FinishReason): GenerationResult {
    return {
      id: r.request.id,
      tokenIds: r.output.tokenIds,
      tokens: r.output.tokens,
      text: r.output.text,
      finishReason,
      promptTokens: r.request.promptTokens.length,
    };
  }
}
