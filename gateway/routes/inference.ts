// What the chat and completions routes share: starting a generation for the caller and tying it to the
// client's connection (a disconnect cancels it), and turning a worker's Final into OpenAI's usage and
// finish_reason.
import type { Context } from "hono";
import type { FinishReasonOut, UsageBody } from "../../schema/api.ts";
import type { Final } from "../../schema/wire.ts";
import type { Admitted } from "../admission.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { type Generation, startGeneration } from "../generation.ts";
import type { ResolvedModel } from "../models.ts";

export async function begin(
  c: Context<GatewayEnv>,
  deps: GatewayDeps,
  resolved: ResolvedModel,
  admitted: Admitted,
): Promise<Generation> {
  const generation = await startGeneration(
    {
      bus: deps.bus,
      routing: deps.routing,
      timeoutMs: deps.limits.requestTimeoutMs,
      retryAfterSeconds: deps.limits.retryAfterSeconds,
      now: deps.now,
    },
    {
      requestId: c.get("requestId"),
      caller: c.get("principal"),
      base: resolved.base.name,
      adapter: resolved.adapter,
      admitted,
    },
  );
  const signal = c.req.raw.signal;
  if (signal.aborted) generation.cancel();
  else signal.addEventListener("abort", () => generation.cancel(), { once: true });
  return generation;
}

export function usageOf(final: Final): UsageBody {
  const { prompt_tokens, completion_tokens } = final.usage;
  return { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
}

/** Only stop and length reach here: generation.chunks() throws for error and cancelled. */
export function finishReasonOf(final: Final): FinishReasonOut {
  return final.finish_reason === "length" ? "length" : "stop";
}
