// What the chat and completions routes share: starting a generation for the caller within its limits (rate
// limits and quota, gateway/usage-limits.ts), tying it to the client's connection (a disconnect cancels
// it), waiting for a worker to start when the base has none (scaling from zero), and turning a worker's
// Final into OpenAI's usage and finish_reason.
import type { Context } from "hono";
import type { FinishReasonOut, UsageBody } from "../../schema/api.ts";
import type { Final } from "../../schema/wire.ts";
import type { Admitted } from "../admission.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { awaitColdStart, type Generation, type GenerationOptions, startGeneration } from "../generation.ts";
import type { ResolvedModel } from "../models.ts";
import { admitWithinLimits } from "../usage-limits.ts";

export async function begin(
  c: Context<GatewayEnv>,
  deps: GatewayDeps,
  resolved: ResolvedModel,
  admitted: Admitted,
): Promise<Generation> {
  const caller = c.get("principal");
  const requestId = c.get("requestId");
  c.set("base", resolved.base.name);
  // The most tokens the request can use: what rate limits count and the quota reserves.
  const tokens = admitted.promptTokenIds.length + admitted.sampling.max_tokens;
  const admission = await admitWithinLimits(deps, caller, requestId, tokens);
  // Set on c.res, Hono copies them onto whatever response the route returns, streams included.
  for (const [name, value] of Object.entries(admission.headers)) c.res.headers.set(name, value);
  const options: GenerationOptions = {
    bus: deps.bus,
    routing: deps.routing,
    timeoutMs: deps.limits.requestTimeoutMs,
    retryAfterSeconds: deps.limits.retryAfterSeconds,
    coldStartTimeoutMs: deps.limits.coldStartTimeoutMs,
    now: deps.now,
    metrics: deps.metrics,
  };
  let generation: Generation;
  try {
    generation = await startGeneration(options, {
      requestId,
      caller,
      base: resolved.base.name,
      adapter: resolved.adapter,
      admitted,
    });
    deps.metrics?.added(resolved.base.name, (performance.now() - c.get("startedAt")) / 1000);
    const signal = c.req.raw.signal;
    if (signal.aborted) generation.cancel();
    else signal.addEventListener("abort", () => generation.cancel(), { once: true });
    await awaitColdStart(options, generation);
  } catch (error) {
    // Not queued, or queued for a worker that never came (no worker will run it): no usage event will
    // settle the reservation; one that fails to go stays until it expires.
    await admission
      .release()
      .catch((releaseError: unknown) =>
        deps.log.warn(
          { requestId, err: releaseError instanceof Error ? releaseError.message : String(releaseError) },
          "could not release a quota reservation",
        ),
      );
    throw error;
  }
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
