// POST /v1/chat/completions: OpenAI's chat API. Non-streaming answers one chat.completion with usage;
// streaming sends a role chunk per choice, content deltas and each choice's finish chunk as they come
// (choices interleaved, gateway/choices.ts), the usage chunk when stream_options.include_usage asks for it,
// then [DONE]. With tools, an answer that is a call comes as tool_calls (gateway/tool-calls.ts): streamed, a
// required call piece by piece as OpenAI streams calls (a forced custom tool's answer as its input), an
// "auto" one in one delta once complete.
// A reasoning model's reasoning comes apart from its answer, as reasoning_content (gateway/reasoning.ts).
// A stream's first reply is awaited before answering for a while (openStream), so an error that comes
// early still gets its own HTTP status. With `store: true` the completion is kept (a stream's put back
// together, gateway/streamed-completion.ts) before its answer ends, for GET /v1/chat/completions/{id}.
import type { Context, Handler } from "hono";
import { type ChatCompletion, type ChatCompletionChunk, ChatCompletionRequest } from "../../schema/api.ts";
import type { StoredRequest } from "../../schema/stored-chat-api.ts";
import type { Final, TokenLogprob } from "../../schema/wire.ts";
import { type Admitted, admitChat, refuseUnansweredToolMessages } from "../admission.ts";
import { AutoCallStream } from "../auto-call-stream.ts";
import { saveChatCompletion } from "../chat-completion-store.ts";
import { collectChoices, interleave } from "../choices.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { choiceRequestId } from "../generation.ts";
import { chatLogprobs, promptLogprobsOut } from "../logprobs.ts";
import { resolveModel } from "../models.ts";
import { ReasoningSplit, splitReply } from "../reasoning.ts";
import { readBody } from "../request-body.ts";
import { refuseOverResponseStorage } from "../response-storage-quota.ts";
import { serveTier } from "../service-tier.ts";
import { StreamedCompletion } from "../streamed-completion.ts";
import { answerCalls, forcedCallStream, onePerCall, type ToolCallDelta } from "../tool-calls.ts";
import { begin, finishReasonOf, openStream, streamResponse, usageOf } from "./inference.ts";

/**
 * What a stored completion says of the request that made it, as OpenAI's stored objects do: the sampling
 * it ran with (the base's generation_config.json filling what the request left out), its tools and
 * response format, and its `user`.
 */
function requestEcho(body: ChatCompletionRequest, admitted: Admitted): StoredRequest {
  const { temperature, top_p, seed, presence_penalty, frequency_penalty } = admitted.sampling;
  return {
    temperature,
    top_p,
    seed,
    presence_penalty,
    frequency_penalty,
    tools: body.tools ?? null,
    tool_choice: body.tool_choice ?? null,
    response_format: body.response_format ?? null,
    input_user: body.user ?? null,
  };
}

/**
 * Keeps a completion its request asked to store. A failure is logged, not thrown: the answer was generated
 * and billed, and losing it would be worse than a later 404 for its id.
 */
async function keep(
  c: Context<GatewayEnv>,
  deps: GatewayDeps,
  body: ChatCompletionRequest,
  admitted: Admitted,
  completion: ChatCompletion,
  createdAt: Date,
): Promise<void> {
  const requestId = c.get("requestId");
  const failed = (what: string) => (error: unknown) =>
    deps.log.error({ requestId, err: error instanceof Error ? error.message : String(error) }, what);
  const saved = {
    completion,
    request: requestEcho(body, admitted),
    messages: body.messages,
    metadata: body.metadata ?? {},
    createdAt,
  };
  await saveChatCompletion(deps.db, c.get("principal").orgId, saved).catch(
    failed("could not store a chat completion"),
  );
  await deps.storedRetention.afterStoringChatCompletion(deps.db, deps.log, { requestId });
}

export function chatCompletions(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const body = await readBody(c, ChatCompletionRequest);
    const resolved = await resolveModel(deps, c.get("principal"), body.model);
    refuseUnansweredToolMessages(body.messages);
    // Before the compile below spends the org's compile time.
    if (body.store === true) await refuseOverResponseStorage(deps, c.get("principal").keyId);
    const admitted = deps.compileTime.admit(c.get("principal").orgId, () => admitChat(body, resolved.base));
    const startedAt = new Date(deps.now());
    const head = {
      id: `chatcmpl-${c.get("requestId")}`,
      created: Math.floor(startedAt.getTime() / 1000),
      model: resolved.model,
      ...(await serveTier(c, deps, body.service_tier)),
    };
    const wantLogprobs = admitted.sampling.logprobs;
    const tools = admitted.tools ?? null;
    const callId = (index: number) => `call_${choiceRequestId(c.get("requestId"), index)}`;

    const reasoning = admitted.reasoning ?? null;

    if (!admitted.stream) {
      const replies = await collectChoices(await begin(c, deps, resolved, admitted));
      let reasoningTokens = 0;
      const completion: ChatCompletion = {
        ...head,
        object: "chat.completion",
        choices: replies.map(({ text, pieces, logprobs, final }, index) => {
          const split = reasoning ? splitReply(pieces, reasoning) : null;
          reasoningTokens += split?.reasoningTokens ?? 0;
          const answer = split ? split.content : text;
          // As streamed: reasoning_content only where the answer reasoned.
          const thought = split?.reasoning ? { reasoning_content: split.reasoning } : {};
          const answerLogprobs = split ? logprobs.filter((_, i) => !split.isReasoning[i]) : logprobs;
          const calls = tools ? answerCalls(tools, answer, callId(index)) : null;
          if (calls && calls.length > 0) {
            const message = {
              role: "assistant" as const,
              content: null,
              ...thought,
              refusal: null,
              tool_calls: calls,
            };
            // A forced call cut short by max_tokens ends "length", as a text would.
            const cut = tools!.forced !== null && final.finish_reason !== "stop";
            const finish = cut ? finishReasonOf(final) : ("tool_calls" as const);
            return { index, message, logprobs: null, finish_reason: finish };
          }
          // A required call cut before its name is an empty answer, as streamed (never the call's JSON).
          return {
            index,
            message: { role: "assistant", content: calls ? "" : answer, ...thought, refusal: null },
            logprobs: wantLogprobs
              ? { content: chatLogprobs(calls ? [] : answerLogprobs), refusal: null }
              : null,
            finish_reason: finishReasonOf(final),
          };
        }),
        usage: usageOf(
          replies.map((reply) => reply.final),
          reasoning ? reasoningTokens : undefined,
        ),
        // The first choice's run scored the prompt (generation.ts).
        ...(admitted.promptLogprobs !== undefined
          ? { prompt_logprobs: promptLogprobsOut(replies[0]!.promptLogprobs, admitted.promptLogprobs) }
          : {}),
      };
      if (body.store === true) await keep(c, deps, body, admitted, completion, startedAt);
      return c.json(completion);
    }

    const { opening } = await openStream(c, deps, resolved, admitted);
    const usage = admitted.includeUsage ? { usage: null } : {};
    // With store: true, every choice chunk (each is sent as soon as it is made) is also put into the
    // completion that is kept before the stream's end.
    const stored = body.store === true ? new StreamedCompletion(wantLogprobs) : null;
    const chunk = (choice: ChatCompletionChunk["choices"][number]): ChatCompletionChunk => {
      const made: ChatCompletionChunk = {
        ...head,
        object: "chat.completion.chunk",
        choices: [choice],
        ...usage,
      };
      stored?.add(made);
      return made;
    };
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
      // A required call streams as calls do; with "auto", a choice's text is held while it may be a call
      // and its calls stream once one begins (gateway/auto-call-stream.ts), its logprobs held with it.
      const required = choices.map((_, index) => forcedCallStream(tools, callId(index)));
      const calls = choices.map((_, index) =>
        tools && !tools.forced ? new AutoCallStream(tools, callId(index)) : null,
      );
      const splits = choices.map(() => (reasoning ? new ReasoningSplit(reasoning.opened) : null));
      const callDeltas = (index: number, deltas: ToolCallDelta[]) =>
        chunk({ index, delta: { tool_calls: onePerCall(deltas) }, logprobs: null, finish_reason: null });
      const heldLogprobs = choices.map((): TokenLogprob[] => []);
      const content = (index: number, text: string, logprobs: TokenLogprob[]) =>
        chunk({
          index,
          delta: { content: text },
          logprobs: wantLogprobs ? { content: chatLogprobs(logprobs), refusal: null } : null,
          finish_reason: null,
        });
      // Logprobs are the content's: a reasoning token's are not reported.
      const thought = (index: number, text: string) =>
        chunk({ index, delta: { reasoning_content: text }, logprobs: null, finish_reason: null });
      /**
       * The answer's text that follows its reasoning: a required call's arguments, or content (held while
       * it may be a call).
       */
      function* answer(index: number, text: string, held: TokenLogprob[]): Generator<ChatCompletionChunk> {
        const call = required[index];
        if (call) {
          // A call's tokens have no logprobs in OpenAI's shape.
          held.length = 0;
          const deltas = call.push(text);
          if (deltas.length > 0) yield callDeltas(index, deltas);
          return;
        }
        const stream = calls[index];
        if (stream) {
          const out = stream.push(text);
          if (out.calls.length > 0) {
            held.length = 0;
            yield callDeltas(index, out.calls);
          } else if (out.text !== "") yield content(index, out.text, held.splice(0));
          return;
        }
        if (text !== "" || (wantLogprobs && held.length > 0)) yield content(index, text, held.splice(0));
        else held.length = 0;
      }
      for await (const { index, step } of interleave(choices)) {
        const held = heldLogprobs[index]!;
        const call = required[index];
        const split = splits[index];
        if (step.done) {
          finals.push(step.value);
          if (split) {
            const rest = split.end();
            if (rest.reasoning !== "") yield thought(index, rest.reasoning);
            if (rest.content !== "") yield* answer(index, rest.content, held);
          }
          if (call) {
            const rest = call.end();
            if (rest.length > 0) yield callDeltas(index, rest);
            // A call cut short by max_tokens ends "length", as a text would.
            const finish = step.value.finish_reason === "stop" ? "tool_calls" : finishReasonOf(step.value);
            yield chunk({ index, delta: {}, logprobs: null, finish_reason: finish });
            continue;
          }
          const end = calls[index]?.end();
          if (end && "calls" in end) {
            if (end.calls.length > 0) yield callDeltas(index, end.calls);
            const finish = end.cut ? finishReasonOf(step.value) : "tool_calls";
            yield chunk({ index, delta: {}, logprobs: null, finish_reason: finish });
            continue;
          }
          if (end && end.text !== "") yield content(index, end.text, held.splice(0));
          yield chunk({ index, delta: {}, logprobs: null, finish_reason: finishReasonOf(step.value) });
          continue;
        }
        if (split) {
          const out = split.push(step.value.text, step.value.token_ids.length);
          if (!out.reasoningTokens) held.push(...(step.value.logprobs ?? []));
          if (out.reasoning !== "") yield thought(index, out.reasoning);
          if (out.content !== "") yield* answer(index, out.content, held);
          continue;
        }
        held.push(...(step.value.logprobs ?? []));
        yield* answer(index, step.value.text, held);
      }
      const reasoningTokens = reasoning
        ? splits.reduce((sum, split) => sum + (split?.reasoningTokens ?? 0), 0)
        : undefined;
      const streamed = usageOf(finals, reasoningTokens);
      // Kept before the last chunk, so a client can read it back as soon as its stream ends.
      if (stored) await keep(c, deps, body, admitted, stored.completion(head, streamed), startedAt);
      if (admitted.includeUsage) {
        yield { ...head, object: "chat.completion.chunk", choices: [], usage: streamed };
      }
    }
    return streamResponse(c, deps, opening, events());
  };
}
