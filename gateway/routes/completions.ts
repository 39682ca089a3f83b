// POST /v1/completions: OpenAI's legacy completions API, a prompt or a list of them and n completions of
// each (answer i is choice i % n of prompt ⌊i / n⌋), streaming (choices interleaved, gateway/choices.ts) or not, with legacy logprobs (parallel arrays) when
// `logprobs` asks for them. With echo each answer starts with the prompt, its logprobs with the prompt
// tokens' (the worker scores them: what evaluation harnesses such as lm-eval-harness read); vLLM's
// prompt_logprobs adds them in vLLM's shape.
import type { Handler } from "hono";
import { type Completion, type CompletionLogprobs, CompletionRequest } from "../../schema/api.ts";
import type { Final, PromptTokenLogprob } from "../../schema/wire.ts";
import { admitCompletion, runPrompt } from "../admission.ts";
import { collectChoices, interleave } from "../choices.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import {
  completionLogprobs,
  concatLogprobs,
  echoedPromptLogprobs,
  promptLogprobsOut,
  TextOffsets,
} from "../logprobs.ts";
import { resolveModel } from "../models.ts";
import { readBody } from "../request-body.ts";
import { serveTier } from "../service-tier.ts";
import { begin, finishReasonOf, openStream, streamResponse, usageOf } from "./inference.ts";

export function completions(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const body = await readBody(c, CompletionRequest);
    const resolved = await resolveModel(deps, c.get("principal"), body.model);
    const admitted = deps.compileTime.admit(c.get("principal").orgId, () =>
      admitCompletion(body, resolved.base),
    );
    const head = {
      id: `cmpl-${c.get("requestId")}`,
      object: "text_completion" as const,
      created: Math.floor(deps.now() / 1000),
      model: resolved.model,
      ...(await serveTier(c, deps, body.service_tier)),
    };
    const wantLogprobs = admitted.sampling.logprobs;
    const { promptLogprobs } = admitted;
    // The prompt part of run `run`'s echoed logprobs, continuing in `offsets` (null without logprobs).
    const echoedLogprobs = (run: number, entries: readonly PromptTokenLogprob[], offsets: TextOffsets) =>
      wantLogprobs
        ? echoedPromptLogprobs(
            resolved.base.tokenizer,
            runPrompt(admitted, run).prompt.tokenIds,
            entries,
            admitted.sampling.top_logprobs,
            offsets,
          )
        : null;

    if (!admitted.stream) {
      const replies = await collectChoices(await begin(c, deps, resolved, admitted));
      const completion: Completion = {
        ...head,
        choices: replies.map((reply, index) => {
          const { prompt, choice } = runPrompt(admitted, index);
          const offsets = new TextOffsets();
          const echoed =
            prompt.echo === undefined ? null : echoedLogprobs(index, reply.promptLogprobs, offsets);
          const generated = wantLogprobs ? completionLogprobs(reply.logprobs, offsets) : null;
          // Each prompt's first choice's run scored it (every run, with echo: generation.ts).
          const scored = replies[index - choice]!.promptLogprobs;
          return {
            index,
            text: (prompt.echo ?? "") + reply.text,
            logprobs: echoed && generated ? concatLogprobs(echoed, generated) : generated,
            finish_reason: finishReasonOf(reply.final),
            ...(promptLogprobs !== undefined
              ? { prompt_logprobs: promptLogprobsOut(scored, promptLogprobs) }
              : {}),
          };
        }),
        usage: usageOf(replies.map((reply) => reply.final)),
      };
      return c.json(completion);
    }

    const { opening } = await openStream(c, deps, resolved, admitted);
    const usage = admitted.includeUsage ? { usage: null } : {};
    async function* events(): AsyncGenerator<Completion> {
      const { choices } = await opening;
      const offsets = choices.map(() => new TextOffsets());
      // An echo goes out as each choice's first event, once the worker has scored the prompt.
      const scored = choices.map((): PromptTokenLogprob[] => []);
      const echoed = choices.map((_, run) => runPrompt(admitted, run).prompt.echo === undefined);
      const echoOf = (index: number): Completion => {
        echoed[index] = true;
        const text = runPrompt(admitted, index).prompt.echo!;
        const logprobs = echoedLogprobs(index, scored[index]!, offsets[index]!);
        return { ...head, choices: [{ index, text, logprobs, finish_reason: null }], ...usage };
      };
      const finals: Final[] = [];
      for await (const { index, step } of interleave(choices)) {
        if (!step.done && step.value.prompt_logprobs) {
          scored[index]!.push(...step.value.prompt_logprobs);
          continue;
        }
        if (!echoed[index]) yield echoOf(index);
        if (step.done) {
          finals.push(step.value);
          const finish = finishReasonOf(step.value);
          yield { ...head, choices: [{ index, text: "", logprobs: null, finish_reason: finish }], ...usage };
          continue;
        }
        const { text, logprobs } = step.value;
        let lp: CompletionLogprobs | null = null;
        if (wantLogprobs) lp = completionLogprobs(logprobs ?? [], offsets[index]);
        if (text !== "" || (lp && lp.tokens.length > 0)) {
          yield { ...head, choices: [{ index, text, logprobs: lp, finish_reason: null }], ...usage };
        }
      }
      if (admitted.includeUsage) yield { ...head, choices: [], usage: usageOf(finals) };
    }
    return streamResponse(c, deps, opening, events());
  };
}
