// POST /v1/completions: OpenAI's legacy completions API, one prompt per request, streaming or not, with
// legacy logprobs (parallel arrays) when `logprobs` asks for them.
import type { Handler } from "hono";
import { type Completion, type CompletionLogprobs, CompletionRequest } from "../../schema/api.ts";
import type { Final, TokenChunk } from "../../schema/wire.ts";
import { admitCompletion } from "../admission.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { collectReply } from "../generation.ts";
import { completionLogprobs, TextOffsets } from "../logprobs.ts";
import { resolveModel } from "../models.ts";
import { readBody } from "../request-body.ts";
import { begin, finishReasonOf, openStream, streamResponse, usageOf } from "./inference.ts";

export function completions(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const body = await readBody(c, CompletionRequest);
    const resolved = await resolveModel(deps, c.get("principal"), body.model);
    const admitted = admitCompletion(body, resolved.base);
    const head = {
      id: `cmpl-${c.get("requestId")}`,
      object: "text_completion" as const,
      created: Math.floor(deps.now() / 1000),
      model: body.model,
    };
    const wantLogprobs = admitted.sampling.logprobs;

    if (!admitted.stream) {
      const generation = await begin(c, deps, resolved, admitted);
      const { text, logprobs, final } = await collectReply(generation.chunks());
      const completion: Completion = {
        ...head,
        choices: [
          {
            index: 0,
            text,
            logprobs: wantLogprobs ? completionLogprobs(logprobs) : null,
            finish_reason: finishReasonOf(final),
          },
        ],
        usage: usageOf(final),
      };
      return c.json(completion);
    }

    const { opening } = await openStream(c, deps, resolved, admitted);
    const usage = admitted.includeUsage ? { usage: null } : {};
    async function* events(): AsyncGenerator<Completion> {
      const { chunks, first } = await opening;
      const offsets = new TextOffsets();
      let step: IteratorResult<TokenChunk, Final> = first;
      while (!step.done) {
        const { text, logprobs } = step.value;
        let lp: CompletionLogprobs | null = null;
        if (wantLogprobs) lp = completionLogprobs(logprobs ?? [], offsets);
        if (text !== "" || (lp && lp.tokens.length > 0)) {
          yield { ...head, choices: [{ index: 0, text, logprobs: lp, finish_reason: null }], ...usage };
        }
        step = await chunks.next();
      }
      const finish = finishReasonOf(step.value);
      yield { ...head, choices: [{ index: 0, text: "", logprobs: null, finish_reason: finish }], ...usage };
      if (admitted.includeUsage) yield { ...head, choices: [], usage: usageOf(step.value) };
    }
    return streamResponse(c, deps, opening, events());
  };
}
