// A streamed chat completion put back together from its chunks, as the non-streaming answer would have
// been: each choice's content, reasoning, calls (a call's deltas joined by index) and logprobs, and its
// finish reason. A stream with `store: true` is stored as this (gateway/chat-completion-store.ts).
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatTokenLogprob,
  FinishReasonOut,
  ToolCall,
  UsageBody,
} from "../schema/api.ts";

interface Choice {
  content: string;
  reasoning: string | null;
  calls: ToolCall[];
  logprobs: ChatTokenLogprob[];
  finish: FinishReasonOut | null;
}

type Head = Pick<ChatCompletion, "id" | "created" | "model" | "service_tier">;

export class StreamedCompletion {
  private readonly choices = new Map<number, Choice>();

  /** `logprobs`: whether the request asked for them (a text answer then carries its tokens'). */
  constructor(private readonly logprobs: boolean) {}

  add(chunk: ChatCompletionChunk): void {
    for (const { index, delta, logprobs, finish_reason } of chunk.choices) {
      let choice = this.choices.get(index);
      if (!choice) {
        choice = { content: "", reasoning: null, calls: [], logprobs: [], finish: null };
        this.choices.set(index, choice);
      }
      if (delta.content !== undefined) choice.content += delta.content;
      if (delta.reasoning_content !== undefined) {
        choice.reasoning = (choice.reasoning ?? "") + delta.reasoning_content;
      }
      for (const call of delta.tool_calls ?? []) joinCall(choice.calls, call);
      if (logprobs?.content) choice.logprobs.push(...logprobs.content);
      if (finish_reason) choice.finish = finish_reason;
    }
  }

  /** The completion the chunks make, with the stream's usage. */
  completion(head: Head, usage: UsageBody): ChatCompletion {
    const indices = [...this.choices.keys()].sort((a, b) => a - b);
    return {
      ...head,
      object: "chat.completion",
      choices: indices.map((index) => {
        const choice = this.choices.get(index)!;
        const thought = choice.reasoning !== null ? { reasoning_content: choice.reasoning } : {};
        const message =
          choice.calls.length > 0
            ? {
                role: "assistant" as const,
                content: null,
                ...thought,
                refusal: null,
                tool_calls: choice.calls,
              }
            : { role: "assistant" as const, content: choice.content, ...thought, refusal: null };
        const logprobs =
          this.logprobs && choice.calls.length === 0 ? { content: choice.logprobs, refusal: null } : null;
        return { index, message, logprobs, finish_reason: choice.finish ?? "stop" };
      }),
      usage,
    };
  }
}

type CallDelta = NonNullable<ChatCompletionChunk["choices"][number]["delta"]["tool_calls"]>[number];

/** A call's delta into the calls so far: its first delta opens it, later ones add to its text. */
function joinCall(calls: ToolCall[], delta: CallDelta): void {
  const call = calls[delta.index];
  if ("function" in delta) {
    if (!call) {
      calls[delta.index] = {
        id: delta.id ?? "",
        type: "function",
        function: { name: delta.function.name ?? "", arguments: delta.function.arguments ?? "" },
      };
    } else if (call.type === "function") call.function.arguments += delta.function.arguments ?? "";
    return;
  }
  if (!call) {
    calls[delta.index] = {
      id: delta.id ?? "",
      type: "custom",
      custom: { name: delta.custom.name ?? "", input: delta.custom.input ?? "" },
    };
  } else if (call.type === "custom") call.custom.input += delta.custom.input ?? "";
}
