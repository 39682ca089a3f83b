// What the chat and completions routes share: starting a generation for the caller within its limits (rate
// limits and quota, gateway/usage-limits.ts), tying it to the client's connection (a disconnect cancels
// it), waiting for a worker to start when the base has none (scaling from zero), the SSE response of a
// stream, and turning a worker's Final into OpenAI's usage and finish_reason.
import type { Context } from "hono";
import type { FinishReasonOut, UsageBody } from "../../schema/api.ts";
import type { Final } from "../../schema/wire.ts";
import { type Admitted, runCount, runPrompt } from "../admission.ts";
import { cancelGenerations, type OpenChoice, openChoices } from "../choices.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { toApiError } from "../errors.ts";
import {
  awaitColdStart,
  choiceRequestId,
  type Generation,
  type GenerationOptions,
  startGenerations,
} from "../generation.ts";
import type { ResolvedModel } from "../models.ts";
import { eventStream } from "../sse.ts";
import { admitWithinLimits } from "../usage-limits.ts";
import { within } from "../within.ts";

/**
 * Starts the request's runs (one per choice) within the caller's limits, tied to the client's connection,
 * once a worker has them: on an error none is left running and the quota holds are given back.
 */
export async function begin(
  c: Context<GatewayEnv>,
  deps: GatewayDeps,
  resolved: ResolvedModel,
  admitted: Admitted,
): Promise<Generation[]> {
  const caller = c.get("principal");
  const requestId = c.get("requestId");
  c.set("base", resolved.base.name);
  // The most tokens each run can use: what rate limits count and the quota reserves.
  const runs = Array.from({ length: runCount(admitted) }, (_, index) => {
    const { prompt } = runPrompt(admitted, index);
    return {
      requestId: choiceRequestId(requestId, index),
      tokens: prompt.tokenIds.length + prompt.maxTokens,
    };
  });
  const admission = await admitWithinLimits(deps, caller, runs);
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
    recentRoutes: deps.recentRoutes,
  };
  let generations: Generation[] = [];
  try {
    generations = await startGenerations(options, {
      requestId,
      caller,
      base: resolved.base.name,
      adapter: resolved.adapter,
      admitted,
      batch: c.get("batch") === true,
      priority: c.get("priority") === true,
    });
    deps.metrics?.added(resolved.base.name, (performance.now() - c.get("startedAt")) / 1000);
    const cancelAll = () => cancelGenerations(generations);
    const signal = c.req.raw.signal;
    if (signal.aborted) cancelAll();
    else signal.addEventListener("abort", cancelAll, { once: true });
    await Promise.all(generations.map((generation) => awaitColdStart(options, generation)));
  } catch (error) {
    cancelGenerations(generations);
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
  return generations;
}

/** A streaming generation once open: started, any cold start waited out, its first replies in. */
export interface OpenStream {
  choices: OpenChoice[];
}

/**
 * Starts a streaming generation and waits up to `limits.streamHeadersAfterMs` for it to open. An error by
 * then throws here, so it still gets its own HTTP status; otherwise the route answers 200 at once and its
 * events await `opening` (with keep-alives meanwhile), a later error going in-band. A disconnect cancels
 * the generation wherever it is (begin ties it to the request's signal).
 */
export async function openStream(
  c: Context<GatewayEnv>,
  deps: GatewayDeps,
  resolved: ResolvedModel,
  admitted: Admitted,
): Promise<{ opening: Promise<OpenStream> }> {
  const opening = (async () => ({ choices: await openChoices(await begin(c, deps, resolved, admitted)) }))();
  // Whoever reads the stream sees its error; this keeps an unread one from counting as unhandled.
  opening.catch(() => {});
  await within(opening, deps.limits.streamHeadersAfterMs);
  return { opening };
}

/** What a stream's source does when the client leaves: cancel the generation, now or once it has opened. */
function cancelWhenOpen(opening: Promise<OpenStream>): () => void {
  return () => {
    opening.then(
      ({ choices }) => cancelGenerations(choices.map((choice) => choice.generation)),
      () => {},
    );
  };
}

/**
 * The SSE response of an opened stream: `events` in OpenAI's shape (chat's framing, which completions
 * share, or the Responses API's named events), an error after the headers in-band,
 * keep-alives while the next event is slow, and the generation cancelled if the client leaves.
 */
export function streamResponse(
  c: Context<GatewayEnv>,
  deps: GatewayDeps,
  opening: Promise<OpenStream>,
  events: AsyncGenerator<unknown, void, void>,
  framing: "chat" | "responses" = "chat",
): Response {
  return streamEvents(c, deps, events, framing, cancelWhenOpen(opening));
}

/** `events` as SSE in OpenAI's framing, an error in-band; `onLeave` runs when the client goes away. */
export function streamEvents(
  c: Context<GatewayEnv>,
  deps: GatewayDeps,
  events: AsyncGenerator<unknown, void, void>,
  framing: "chat" | "responses",
  onLeave: () => void,
): Response {
  let last: unknown = null;
  return eventStream(
    {
      next: async () => {
        const step = await events.next();
        if (!step.done) {
          last = step.value;
          return step.value;
        }
        const failed = (last as { type?: unknown } | null)?.type === "response.failed";
        c.set("streamOutcome", failed ? "failed" : "complete");
        return null;
      },
      errorEvent: (error) => {
        c.set("streamOutcome", "failed");
        const { body } = toApiError(error);
        if (framing === "chat") return body;
        const { code, message, param } = body.error;
        // Numbered on from the stream's last event, as every Responses API event is.
        const previous = (last as { sequence_number?: unknown } | null)?.sequence_number;
        const sequence_number = typeof previous === "number" ? previous + 1 : 0;
        return { type: "error", code, message, param, sequence_number, error: body.error };
      },
      onCancel: onLeave,
      named: framing === "responses",
    },
    { "x-request-id": c.get("requestId") },
    deps.limits.keepAliveMs,
  );
}

/** OpenAI's usage of a request: the sum over its choices' runs, each billed as it ran. */
/** The usage of a request's choices; `reasoningTokens` where the answers held reasoning (gateway/reasoning.ts). */
export function usageOf(finals: readonly Final[], reasoningTokens?: number): UsageBody {
  let prompt = 0;
  let completion = 0;
  let cached = 0;
  for (const { usage } of finals) {
    prompt += usage.prompt_tokens;
    completion += usage.completion_tokens;
    cached += usage.cached_tokens ?? 0;
  }
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
    ...(reasoningTokens !== undefined
      ? { completion_tokens_details: { reasoning_tokens: reasoningTokens } }
      : {}),
  };
}

/** Only stop and length reach here: generation.chunks() throws for error and cancelled. */
export function finishReasonOf(final: Final): FinishReasonOut {
  return final.finish_reason === "length" ? "length" : "stop";
}
