// Generation by slot number through the worker's scheduler, for the engine tests and the device checks:
// adapters written into slots 1…n by the caller, each request naming its slot (0: the base model), every
// request of one SlotGeneration batched together as the worker batches them.
import type { FinishReason } from "../schema/wire.ts";
import type { SampledToken, SamplingParams } from "../worker/engine/sampler.ts";
import type { SequenceLimits } from "../worker/engine/sequence-output.ts";
import type { Tokenizer } from "../worker/engine/tokenizer.ts";
import { ResidentAdapters } from "../worker/resident-adapters.ts";
import { Scheduler, type SchedulerEngine } from "../worker/scheduler.ts";

export interface SlotRequest {
  id: string;
  promptTokens: readonly number[];
  /** 0: the base model. */
  slot: number;
  sampling: SamplingParams;
  maxTokens: number;
  /** Defaults to the tokenizer's end-of-sequence ids. */
  stopTokenIds?: readonly number[];
  stopStrings?: readonly string[];
  json?: SequenceLimits["json"];
  reasoning?: SequenceLimits["reasoning"];
  onToken?: (token: SampledToken | null, text: string) => void;
}

export interface Generated {
  id: string;
  tokenIds: number[];
  tokens: SampledToken[];
  text: string;
  finishReason: FinishReason;
}

export interface SlotGenerationOptions {
  /** Adapters in slots 1…slots. */
  slots: number;
  maxBatch: number;
  maxContext: number;
  /** The scheduler's step token budget (prompt tokens prefilled plus one per running sequence). */
  stepTokens: number;
}

export class SlotGeneration {
  readonly scheduler: Scheduler;
  private readonly adapters: ResidentAdapters;

  constructor(engine: SchedulerEngine, tokenizer: Tokenizer, options: SlotGenerationOptions) {
    this.adapters = ResidentAdapters.numbered(options.slots, 1);
    this.scheduler = new Scheduler(engine, tokenizer, this.adapters, {
      maxBatch: options.maxBatch,
      maxContext: options.maxContext,
      stepTokenBudget: options.stepTokens,
      maxAdaptersPerStep: Math.max(1, options.slots),
    });
  }

  /** Runs one request with the others submitted; rejects with the job's error if it failed. */
  async generate(request: SlotRequest): Promise<Generated> {
    const outcome = await this.scheduler.submit({
      id: request.id,
      org: "local",
      adapter: this.adapters.ref(request.slot),
      promptTokens: request.promptTokens,
      sampling: request.sampling,
      limits: {
        maxTokens: request.maxTokens,
        ...(request.stopTokenIds ? { stopTokenIds: request.stopTokenIds } : {}),
        ...(request.stopStrings ? { stopStrings: request.stopStrings } : {}),
        ...(request.json ? { json: request.json } : {}),
        ...(request.reasoning ? { reasoning: request.reasoning } : {}),
      },
      ...(request.onToken ? { onToken: request.onToken } : {}),
    });
    if (outcome.kind !== "done") throw new Error(`request ${request.id} was handed back`);
    if (outcome.error) throw outcome.error;
    return {
      id: request.id,
      tokenIds: outcome.tokens.map((t) => t.token),
      tokens: outcome.tokens,
      text: outcome.text,
      finishReason: outcome.finishReason,
    };
  }

  cancel(id: string): void {
    this.scheduler.cancel(id);
  }
}
