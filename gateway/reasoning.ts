// Reasoning models (worker/engine/reasoning-template.ts) write <think>…</think> before their answer. The
// gateway answers as the reasoning APIs built on OpenAI's chat do (DeepSeek's, vLLM's): the reasoning in
// `reasoning_content`, the answer in `content`, and the reasoning's tokens counted in
// usage.completion_tokens_details.reasoning_tokens (they are output tokens, billed as such).
// `reasoning_effort: "none"` turns reasoning off where the template allows it (Qwen3's enable_thinking);
// the other efforts leave it on — the model decides how long it reasons. vLLM's
// `chat_template_kwargs: {"enable_thinking": false}`, which Qwen3's documentation tells clients to send,
// means the same as effort "none" (true: reasoning on).
import type { ReasoningTemplate } from "../worker/engine/reasoning-template.ts";
import { THINK_CLOSE, THINK_OPEN } from "../worker/engine/reasoning-template.ts";
import { invalidRequest } from "./errors.ts";
import type { ReplyPiece } from "./generation.ts";

/** OpenAI's reasoning efforts. */
const EFFORTS = ["none", "minimal", "low", "medium", "high", "xhigh"];

/**
 * The effort a chat request asks for, from reasoning_effort or vLLM's chat_template_kwargs.enable_thinking,
 * and the parameter to name when it cannot be had. Other template arguments are refused: the prompt is
 * rendered here, not by the caller.
 */
export function requestedEffort(body: {
  reasoning_effort?: string | null | undefined;
  chat_template_kwargs?: Record<string, unknown> | null | undefined;
}): { effort: string | null | undefined; param: string } {
  const kwargs = body.chat_template_kwargs ?? {};
  for (const key of Object.keys(kwargs)) {
    if (key !== "enable_thinking") {
      throw invalidRequest(
        `chat_template_kwargs.${key} is not supported: only enable_thinking is`,
        `chat_template_kwargs.${key}`,
      );
    }
  }
  const thinking = kwargs.enable_thinking;
  const param = "chat_template_kwargs.enable_thinking";
  if (thinking === undefined || thinking === null)
    return { effort: body.reasoning_effort, param: "reasoning_effort" };
  if (typeof thinking !== "boolean") throw invalidRequest(`${param} must be a boolean`, param);
  if (body.reasoning_effort == null) return { effort: thinking ? "medium" : "none", param };
  if (thinking === (body.reasoning_effort === "none")) {
    throw invalidRequest(
      `${param} ${thinking} contradicts reasoning_effort ${JSON.stringify(body.reasoning_effort)}`,
      param,
    );
  }
  return { effort: body.reasoning_effort, param: "reasoning_effort" };
}

/** How a request's answer is generated and read. */
export interface ReasoningPlan {
  /** The template's `enable_thinking`, where the request decides it; absent: the template's default. */
  enableThinking?: boolean;
  /** The answer holds reasoning to split off: whether the prompt already opened its block. Null: it holds none. */
  split: { opened: boolean } | null;
  /** A structured answer that reasons first: the tags the worker's grammar waits for (wire reasoning_tags). */
  tags?: { open: number | null; close: number };
}

/**
 * Checks reasoning_effort against the model and plans the answer. `structured`: the answer is generated
 * under a grammar (JSON mode, a schema, a required call). Where the model's tags are tokens, it reasons
 * first and the grammar holds after its closing tag, as vLLM serves structured output with a reasoning
 * parser; where they are not, the grammar holds from the first token, which leaves no room for reasoning:
 * a switchable model is asked not to reason and the answer is read whole.
 */
export function planReasoning(
  effort: string | null | undefined,
  model: ReasoningTemplate | null,
  structured: boolean,
  param = "reasoning_effort",
): ReasoningPlan {
  if (effort != null && !EFFORTS.includes(effort)) {
    throw invalidRequest(
      `${param} must be one of ${EFFORTS.join(", ")}, got ${JSON.stringify(effort)}`,
      param,
    );
  }
  if (!model) {
    if (effort != null && effort !== "none") {
      throw invalidRequest(`${param} is not supported with this model: it does not reason`, param);
    }
    return { split: null };
  }
  const gated = structured && model.tagIds !== null;
  const off = effort === "none" || (structured && !gated);
  if (off && model.switchable) return { enableThinking: false, split: null };
  if (effort === "none") {
    throw invalidRequest(`${param} "none" is not supported with this model: it always reasons`, param);
  }
  const split = { opened: model.opensInPrompt };
  if (!structured) return { split };
  if (!model.tagIds) return { split: null };
  const tags = { open: model.opensInPrompt ? null : model.tagIds.open, close: model.tagIds.close };
  // The opening tag is forced where the prompt leaves it to the model: a hybrid model, told to reason so
  // that its prompt agrees (a template whose default is not to reason would close an empty block there).
  return { ...(model.switchable ? { enableThinking: true } : {}), split, tags };
}

type State = "start" | "reasoning" | "closed" | "content";

/**
 * Splits an answer's text, as it streams, into reasoning and content. The reasoning is what stands between
 * <think> (at the answer's start, or opened by the prompt) and </think>, without the whitespace around it;
 * whitespace after </think> is dropped too. An answer that does not begin with <think> is all content; one
 * cut off before </think> is all reasoning. Text that may still be the start of a tag is held back.
 */
export class ReasoningSplit {
  private state: State;
  private held = "";
  /** Some reasoning went out: whitespace is no longer leading. */
  private reasoned = false;
  /** Tokens of the reasoning, both tags included. */
  reasoningTokens = 0;

  constructor(opened: boolean) {
    this.state = opened ? "reasoning" : "start";
  }

  /**
   * One chunk's text and token count: what to send now as reasoning and as content, and whether the
   * chunk's tokens were reasoning (then their logprobs are not the content's).
   */
  push(text: string, tokens: number): { reasoning: string; content: string; reasoningTokens: boolean } {
    const before = this.state;
    const out = this.read(text);
    const reasoningTokens = before === "reasoning" || this.state === "reasoning" || this.state === "closed";
    if (reasoningTokens) this.reasoningTokens += tokens;
    return { ...out, reasoningTokens };
  }

  /** At the end: the text still held, where it belongs. */
  end(): { reasoning: string; content: string } {
    const held = this.held;
    this.held = "";
    if (this.state === "reasoning") return { reasoning: held.trimEnd(), content: "" };
    return { reasoning: "", content: this.state === "closed" ? "" : held };
  }

  private read(text: string): { reasoning: string; content: string } {
    const none = { reasoning: "", content: "" };
    if (this.state === "content") return { reasoning: "", content: text };
    this.held += text;
    if (this.state === "start") {
      const start = this.held.trimStart();
      if (start === "" || (THINK_OPEN.startsWith(start) && start !== THINK_OPEN)) return none;
      if (!start.startsWith(THINK_OPEN)) return this.toContent(this.held);
      this.state = "reasoning";
      this.held = start.slice(THINK_OPEN.length);
    }
    let reasoning = "";
    if (this.state === "reasoning") {
      if (!this.reasoned) this.held = this.held.trimStart();
      const close = this.held.indexOf(THINK_CLOSE);
      if (close < 0) {
        // Hold a possible start of the closing tag, and trailing whitespace that may come before it.
        const keep = this.held.length - heldTail(this.held);
        reasoning = this.held.slice(0, keep);
        this.held = this.held.slice(keep);
        if (reasoning !== "") this.reasoned = true;
        return { reasoning, content: "" };
      }
      reasoning = this.held.slice(0, close).trimEnd();
      this.held = this.held.slice(close + THINK_CLOSE.length);
      this.state = "closed";
    }
    const rest = this.held.trimStart();
    if (rest === "") return { reasoning, content: "" };
    return { reasoning, content: this.toContent(rest).content };
  }

  private toContent(text: string): { reasoning: string; content: string } {
    this.state = "content";
    this.held = "";
    return { reasoning: "", content: text };
  }
}

/**
 * A whole reply's reasoning and content, how many of its tokens were reasoning, and which of its tokens
 * (in order) were: their logprobs are not the content's.
 */
export function splitReply(
  pieces: readonly ReplyPiece[],
  plan: NonNullable<ReasoningPlan["split"]>,
): { reasoning: string; content: string; reasoningTokens: number; isReasoning: boolean[] } {
  const split = new ReasoningSplit(plan.opened);
  let reasoning = "";
  let content = "";
  const isReasoning: boolean[] = [];
  for (const piece of pieces) {
    const out = split.push(piece.text, piece.tokens);
    isReasoning.push(...Array<boolean>(piece.tokens).fill(out.reasoningTokens));
    reasoning += out.reasoning;
    content += out.content;
  }
  const rest = split.end();
  reasoning += rest.reasoning;
  content += rest.content;
  return { reasoning, content, reasoningTokens: split.reasoningTokens, isReasoning };
}

/** How many characters at the end of `text` to hold: trailing whitespace and a possible start of </think>. */
function heldTail(text: string): number {
  let partial = 0;
  for (let n = Math.min(THINK_CLOSE.length - 1, text.length); n > 0; n--) {
    if (THINK_CLOSE.startsWith(text.slice(-n))) {
      partial = n;
      break;
    }
  }
  const rest = text.slice(0, text.length - partial);
  return partial + (rest.length - rest.trimEnd().length);
}
