// POST /v1/chat/completions: OpenAI's chat API. Non-streaming answers one chat.completion with usage;
// streaming sends a role chunk per choice, content deltas and each choice's finish chunk as they come
// (choices interleaved, gateway/choices.ts), the usage chunk when stream_options.include_usage asks for it,
// then [DONE]. A stream's first reply is awaited before
// answering for a while (openStream), so an error that comes early still gets its own HTTP status.
import type { Handler } from "hono";
import { type ChatCompletion, type ChatCompletionChunk, ChatCompletionRequest } from "../../schema/api.ts";
import type { Final } from "../../schema/wire.ts";
import { admitChat } from "../admission.ts";
import { collectChoices, interleave } from "../choices.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { chatLogprobs } from "../logprobs.ts";
import { resolveModel } from "../models.ts";
import { readBody } from "../request-body.ts";
import { begin, finishReasonOf, openStream, streamResponse, usageOf } from "./inference.ts";

export function chatCompletions(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const body = await readBody(c, ChatCompletionRequest);
    const resolved = await resolveModel(deps, c.get("principal"), body.model);
    const admitted = admitChat(body, resolved.base);
    const head = {
      id: `chatcmpl-${c.get("requestId")}`,
      created: Math.floor(deps.now() / 1000),
      model: body.model,
    };
    const wantLogprobs = admitted.sampling.logprobs;

    if (!admitted.stream) {
      const replies = await collectChoices(await begin(c, deps, resolved, admitted));
      const completion: ChatCompletion = {
        ...head,
        object: "chat.completion",
        choices: replies.map(({ text, logprobs, final }, index) => ({
          index,
          message: { role: "assistant", content: text, refusal: null },
          logprobs: wantLogprobs ? { content: chatLogprobs(logprobs) } : null,
          finish_reason: finishReasonOf(final),
        })),
        usage: usageOf(replies.map((reply) => reply.final)),
      };
      return c.json(completion);
    }

    const { opening } = await openStream(c, deps, resolved, admitted);
    const usage = admitted.includeUsage ? { usage: null } : {};
    const chunk = (choice: ChatCompletionChunk["choices"][number]): ChatCompletionChunk => ({
      ...head,
      object: "chat.completion.chunk",
      choices: [choice],
      ...usage,
    });
    async function* events(): AsyncGenerator<ChatCompletionChunk> {
      const { choices } = await opening;
      for (const index of choices.keys()) {
        yield chunk({
          index,
          delta: { role: "assistant", content: "" },
          logprobs: null,
          finish_reason: null,
        });
      }
      const finals: Final[] = [];
      for await (const { index, step } of interleave(choices)) {
        if (step.done) {
          finals.push(step.value);
          yield chunk({ index, delta: {}, logprobs: null, finish_reason: finishReasonOf(step.value) });
          continue;
        }
        const { text, logprobs } = step.value;
        if (text !== "" || (wantLogprobs && logprobs && logprobs.length > 0)) {
          yield chunk({
            index,
            delta: { content: text },
            logprobs: wantLogprobs ? { content: chatLogprobs(logprobs ?? []) } : null,
            finish_reason: null,
          });
        }
      }
      if (admitted.includeUsage) {
        yield { ...head, object: "chat.completion.chunk", choices: [], usage: usageOf(finals) };
      }
    }
    return streamResponse(c, deps, opening, events());
  };
}
