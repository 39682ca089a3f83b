// Turns a validated chat or completions body into what a worker runs: prompt token ids (chat template
// applied here, so workers only see ids) and wire sampling parameters, after the checks schemas cannot
// make: n (the number of choices), the prompt and max_tokens against the base's context, token ids against
// the vocabulary, a response format's JSON schema against what the worker keeps, and the OpenAI options
// Luminet refuses rather than silently ignores.
import {
  type ChatCompletionRequest,
  type ChatMessageIn,
  type ChatRole,
  type CompletionRequest,
  type ContentPart,
  contentPartsText,
} from "../schema/api.ts";
import type { SamplingParams } from "../schema/wire.ts";
import { fimPromptIds } from "../worker/engine/fim-tokens.ts";
import { MAX_LOGIT_BIAS } from "../worker/engine/sampler.ts";
import type { ChatMessage } from "../worker/engine/tokenizer.ts";
import type { BaseModelInfo } from "./bases.ts";
import { checkedSchema } from "./checked-schema.ts";
import { invalidRequest } from "./errors.ts";
import { cutAfterFinalMessage } from "./final-message.ts";
import { planReasoning, type ReasoningPlan, requestedEffort } from "./reasoning.ts";
import { requestedStructuredOutput } from "./structured-outputs.ts";
import {
  callOrAnswerFormat,
  forcedCallFormat,
  parsedToolCalls,
  planTools,
  type ToolPlan,
  toolMessages,
} from "./tool-calls.ts";

/** One prompt of a request, run `choices` times. */
export interface AdmittedPrompt {
  tokenIds: number[];
  /** Its runs' max_tokens: the request's, or what the context leaves this prompt. */
  maxTokens: number;
  /** Completions' echo: the prompt's text, which each of its answers starts with (its logprobs with the prompt's). */
  echo?: string;
}

export interface Admitted {
  /**
   * What runs: one prompt (chat, responses), or each of a legacy completions request's, `choices` times
   * each; run r is choice r % choices of prompt ⌊r / choices⌋, as OpenAI indexes the answers (runPrompt).
   */
  prompts: AdmittedPrompt[];
  /** Every run's sampling, but for max_tokens: each run's is its prompt's (this is the first prompt's). */
  sampling: SamplingParams;
  /** OpenAI's n: how many completions of each prompt to generate, each its own run. */
  choices: number;
  stream: boolean;
  /** stream_options.include_usage: a last chunk carries the usage. */
  includeUsage: boolean;
  /** Chat: the functions the answer may call (gateway/tool-calls.ts); null for none. */
  tools?: ToolPlan | null;
  /** Chat: the answer holds reasoning to split off (gateway/reasoning.ts); null for none. */
  reasoning?: ReasoningPlan["split"];
  /** vLLM's prompt_logprobs asked for: how many alternatives each prompt token's entry holds. */
  promptLogprobs?: number;
  /** OpenAI's prompt_cache_key: the org's requests naming it are placed together (gateway/generation.ts). */
  cacheKey?: string;
}

type Common = Pick<
  ChatCompletionRequest,
  | "n"
  | "temperature"
  | "top_p"
  | "top_k"
  | "min_p"
  | "repetition_penalty"
  | "min_tokens"
  | "ignore_eos"
  | "stop_token_ids"
  | "include_stop_str_in_output"
  | "allowed_token_ids"
  | "bad_words"
  | "seed"
  | "stop"
  | "presence_penalty"
  | "frequency_penalty"
  | "stream"
  | "stream_options"
  | "logit_bias"
  | "prompt_logprobs"
  | "truncate_prompt_tokens"
  | "prompt_cache_key"
>;

/**
 * Most choices (n) one request may ask for. Each runs as its own sequence on one worker, so a request's
 * choices take that many of the worker's batch rows at once.
 */
export const MAX_CHOICES = 16;

/** Legacy completions' max_tokens when a request leaves it out: OpenAI's and vLLM's 16 (chat's is the context). */
export const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

/** Most runs (prompts × n) one legacy completions request may ask for; all go to one worker. */
export const MAX_RUNS = 64;

/** How many runs a request makes: each prompt `choices` times. */
export function runCount(admitted: Admitted): number {
  return admitted.prompts.length * admitted.choices;
}

/** The prompt of run `run` (Admitted.prompts) and which of its choices the run is. */
export function runPrompt(admitted: Admitted, run: number): { prompt: AdmittedPrompt; choice: number } {
  return { prompt: admitted.prompts[Math.floor(run / admitted.choices)]!, choice: run % admitted.choices };
}

/** Most tokens one request's logit_bias may list (each is an entry of every decode step). */
export const MAX_LOGIT_BIAS_TOKENS = 1024;

/** logit_bias as [token id, bias] pairs, each key a token id inside the vocabulary, each bias in ±MAX_LOGIT_BIAS. */
function logitBias(bias: Record<string, number> | null | undefined, vocab: number): [number, number][] {
  const entries = Object.entries(bias ?? {});
  if (entries.length > MAX_LOGIT_BIAS_TOKENS) {
    throw invalidRequest(
      `logit_bias lists ${entries.length} tokens; at most ${MAX_LOGIT_BIAS_TOKENS} are allowed`,
      "logit_bias",
    );
  }
  return entries.map(([key, value]) => {
    const id = /^(0|[1-9][0-9]*)$/.test(key) ? Number(key) : Number.NaN;
    if (!Number.isSafeInteger(id)) {
      throw invalidRequest(
        `Invalid key in logit_bias: ${JSON.stringify(key)} is not a token id`,
        "logit_bias",
      );
    }
    if (id >= vocab) {
      throw invalidRequest(
        `logit_bias names token id ${id}, outside the vocabulary of ${vocab} tokens`,
        "logit_bias",
      );
    }
    if (!(Math.abs(value) <= MAX_LOGIT_BIAS)) {
      throw invalidRequest(
        `Invalid value in logit_bias for token ${id}: ${value} is not between -${MAX_LOGIT_BIAS} and ${MAX_LOGIT_BIAS}`,
        "logit_bias",
      );
    }
    return [id, value];
  });
}

/**
 * The response format as the worker takes it; the deprecated function-calling fields (`functions`,
 * `function_call`: use `tools`), audio output and web search refused rather than ignored (reasoning_effort:
 * gateway/reasoning.ts). JSON mode needs the word "JSON" in the messages,
 * as OpenAI requires: a model not told to write JSON may spend all of max_tokens inside the object without
 * closing it. A JSON schema is checked here against the subset the worker's grammar keeps
 * (worker/engine/json-schema.ts), so one it would refuse is a 400 before anything runs.
 */
function checkFormat(body: ChatCompletionRequest): SamplingParams["response_format"] {
  const other = body.modalities?.find((m) => m !== "text");
  if (other !== undefined) {
    throw invalidRequest(
      `modalities ${JSON.stringify(other)} is not supported: the models answer text`,
      "modalities",
    );
  }
  if (body.audio != null)
    throw invalidRequest("audio output is not supported: the models answer text", "audio");
  if (body.web_search_options != null) {
    throw invalidRequest("web search is not supported", "web_search_options");
  }
  if ((body.functions?.length ?? 0) > 0) {
    throw invalidRequest("functions is not supported: give them as tools", "functions");
  }
  const call = body.function_call;
  if (call !== undefined && call !== null && call !== "none" && call !== "auto") {
    throw invalidRequest("function_call is not supported: use tool_choice with tools", "function_call");
  }
  const format = responseFormatOf(body.response_format);
  if (format === "json_object" && !mentionsJson(body.messages)) {
    throw invalidRequest(
      "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
      "messages",
    );
  }
  return format;
}

/** What a response_format asks the worker for: nothing for "text", a checked schema, or JSON mode. */
function responseFormatOf(given: ResponseFormat | null | undefined): SamplingParams["response_format"] {
  const format = given?.type;
  if (format === undefined || format === "text") return undefined;
  if (format === "json_schema") return { json_schema: checkedJsonSchema(given?.json_schema) };
  if (format !== "json_object") {
    throw invalidRequest(
      `response_format ${JSON.stringify(format)} is not supported: use "json_schema", "json_object" or "text"`,
      "response_format",
    );
  }
  return "json_object";
}

/** The format a request's answer follows: its response_format or its structured output, one at most. */
function oneFormat(
  given: SamplingParams["response_format"],
  body: Parameters<typeof requestedStructuredOutput>[0],
): SamplingParams["response_format"] {
  const structured = requestedStructuredOutput(body);
  if (structured === undefined) return given;
  if (given) {
    throw invalidRequest(
      "response_format cannot be combined with structured_outputs or guided_*: give one",
      "response_format",
    );
  }
  return structured;
}

/** Whether any message mentions JSON, as JSON mode requires (OpenAI's rule). */
export function mentionsJson(messages: readonly ChatMessageIn[]): boolean {
  return messages.some((m, i) => /json/i.test(messageText(m, i)));
}

type ResponseFormat = NonNullable<ChatCompletionRequest["response_format"]>;

/**
 * The schema the worker generates under (schemaAsRead: lenient unless `strict`), so the schemas libraries
 * such as Pydantic write (`format` on dates) are served.
 */
function checkedJsonSchema(format: ResponseFormat["json_schema"]): Record<string, unknown> {
  if (!format?.schema) {
    throw invalidRequest(
      'response_format of type "json_schema" needs json_schema.name and json_schema.schema',
      "response_format.json_schema",
    );
  }
  return checkedSchema(
    format.schema,
    format.strict,
    `response_format '${format.name}'`,
    "response_format.json_schema.schema",
  );
}

/** A message as the chat template takes it, checked: tool messages answer a call, only assistants call. */
function chatMessage(message: ChatMessageIn, index: number): ChatMessage {
  if (message.role === "tool" && !message.tool_call_id) {
    throw invalidRequest(
      `messages[${index}]: a tool message needs tool_call_id`,
      `messages.${index}.tool_call_id`,
    );
  }
  if (message.tool_calls && message.role !== "assistant") {
    throw invalidRequest(
      `messages[${index}]: only assistant messages carry tool_calls`,
      `messages.${index}.tool_calls`,
    );
  }
  if (message.reasoning_content != null && message.role !== "assistant") {
    throw invalidRequest(
      `messages[${index}]: only assistant messages carry reasoning_content`,
      `messages.${index}.reasoning_content`,
    );
  }
  return {
    // OpenAI's newer name for the system role; chat templates know "system".
    role: message.role === "developer" ? "system" : message.role,
    content: messageText(message, index),
    ...(message.tool_calls ? { tool_calls: parsedToolCalls(message.tool_calls, index) } : {}),
    ...(message.tool_call_id ? { tool_call_id: message.tool_call_id } : {}),
    ...(message.reasoning_content ? { reasoning_content: message.reasoning_content } : {}),
  };
}

function messageText(message: ChatMessageIn, index: number): string {
  if (message.content === null) {
    if (message.role === "assistant") return "";
    throw invalidRequest(
      `messages[${index}]: a ${message.role} message needs content`,
      `messages.${index}.content`,
    );
  }
  if (typeof message.content === "string") return message.content;
  for (const [k, part] of message.content.entries()) checkPart(part, message.role, index, k);
  return contentPartsText(message.content);
}

/**
 * A content part the chat template can take: text, or an assistant's refusal (its text, as the Responses
 * API reads one; OpenAI's SDKs send an earlier refusal back so). Other kinds are refused by name.
 */
function checkPart(part: ContentPart, role: ChatRole, index: number, k: number): void {
  const at = `messages[${index}].content[${k}]`;
  const param = `messages.${index}.content.${k}`;
  if (part.type === "text" || part.type === "refusal") {
    if (part[part.type] === undefined) {
      throw invalidRequest(`${at}: a ${part.type} part needs its ${part.type}`, `${param}.${part.type}`);
    }
    if (part.type === "refusal" && role !== "assistant") {
      throw invalidRequest(`${at}: only assistant messages carry refusal parts`, param);
    }
    return;
  }
  throw invalidRequest(
    `${at}: content of type ${JSON.stringify(part.type)} is not supported: Luminet serves text models (no images, audio or files)`,
    param,
  );
}

/**
 * Refuses a tool message whose tool_call_id answers no call of an earlier assistant message, as OpenAI does
 * (a chat request holds its whole conversation). The Responses API checks its own input items instead
 * (gateway/response-request.ts): what it continues was taken when stored.
 */
export function refuseUnansweredToolMessages(messages: readonly ChatMessageIn[]): void {
  const calls = new Set<string>();
  for (const [index, message] of messages.entries()) {
    for (const call of message.role === "assistant" ? (message.tool_calls ?? []) : []) calls.add(call.id);
    const id = message.role === "tool" ? message.tool_call_id : undefined;
    if (id === undefined || calls.has(id)) continue;
    throw invalidRequest(
      `messages[${index}]: a message with role 'tool' must be a response to a preceding assistant message's tool_calls, and no call has id ${JSON.stringify(id)}`,
      `messages.${index}.tool_call_id`,
    );
  }
}

/**
 * vLLM's truncate_prompt_tokens: the prompt's last k tokens, or with -1 as many of its last tokens as leave
 * room in the context for max_tokens (the request's, else its default; one token where neither says); the
 * prompt as it is when not asked, or when it is short enough already.
 */
export function truncatedPrompt(
  ids: number[],
  body: Pick<Common, "truncate_prompt_tokens">,
  base: BaseModelInfo,
  requestedMaxTokens: number | null | undefined,
): number[] {
  const keep = tokensKept(body, base, requestedMaxTokens);
  if (keep === null) return ids;
  return ids.length > keep ? ids.slice(ids.length - keep) : ids;
}

/** How many of a prompt's last tokens truncate_prompt_tokens keeps; null: the prompt is not truncated. */
function tokensKept(
  body: Pick<Common, "truncate_prompt_tokens">,
  base: BaseModelInfo,
  requestedMaxTokens: number | null | undefined,
): number | null {
  const k = body.truncate_prompt_tokens;
  if (k == null) return null;
  const keep = k === -1 ? base.contextLength - Math.max(1, requestedMaxTokens ?? 1) : k;
  if (keep < 1) {
    throw invalidRequest(
      `max_tokens (${requestedMaxTokens}) leaves no room in the ${base.contextLength}-token context for a truncated prompt`,
      "truncate_prompt_tokens",
    );
  }
  return keep;
}

/** Tokens beyond those kept that a truncated prompt's tokenized tail surely holds: the cut is this far away. */
const TAIL_MARGIN = 256;

/**
 * A prompt's token ids where only its last `keep` will run: a long text is tokenized from a tail that
 * surely holds TAIL_MARGIN tokens more (the floor: no token covers more bytes than the vocabulary's
 * longest), not whole, so a prompt of megabytes asked to be truncated costs the event loop what its tail
 * does. The tokens kept are far from the cut, which may split a word; where the tokenizer gives no floor,
 * the text is tokenized whole.
 */
function encodedTail(text: string, keep: number, base: BaseModelInfo, addSpecialTokens: boolean): number[] {
  const wanted = keep + TAIL_MARGIN;
  const { tokenizer } = base;
  if (tokenizer.fewestTokens(text) > wanted) {
    // The shortest tail whose floor reaches `wanted`: the floor grows with the tail.
    let [short, long] = [0, text.length];
    while (long - short > 1) {
      const mid = (short + long) >>> 1;
      if (tokenizer.fewestTokens(text.slice(-mid)) >= wanted) long = mid;
      else short = mid;
    }
    // Not from the middle of a surrogate pair.
    const from = text.length - long;
    text = text.slice(/[\udc00-\udfff]/.test(text[from] ?? "") ? from + 1 : from);
  }
  return tokenizer.encode(text, { addSpecialTokens });
}

/**
 * vLLM's bad_words as token sequences: each word as it starts a text, and as it follows a space where that
 * is other tokens of the same count (a word in the middle of a sentence), as vLLM's NoBadWordsLogitsProcessor
 * reads them.
 */
function badWordsIds(words: readonly string[], base: BaseModelInfo): number[][] {
  const ids: number[][] = [];
  for (const word of words) {
    const bare = base.tokenizer.encode(word.trimStart(), { addSpecialTokens: false });
    ids.push(bare);
    const spaced = base.tokenizer.encode(` ${word.trimStart()}`, { addSpecialTokens: false });
    if (spaced[0] !== bare[0] && spaced.length === bare.length) ids.push(spaced);
  }
  return ids;
}

/**
 * Refuses, before tokenizing it, a prompt text that cannot fit the context whatever it encodes to: the
 * fewest tokens it can take (worker/engine/token-count-floor.ts) fill it already. Tokenizing runs on the
 * gateway's event loop, about a microsecond a byte, so this bounds it by what a prompt that fits can need.
 * Not for a prompt the request asks to truncate: it is tokenized whole, as vLLM does.
 */
export function refuseSurelyTooLong(text: string, base: BaseModelInfo, param: string): void {
  const fewest = base.tokenizer.fewestTokens(text);
  if (fewest < base.contextLength) return;
  throw invalidRequest(
    `This model's maximum context length is ${base.contextLength} tokens. However, your prompt holds at ` +
      `least ${fewest} tokens. Please reduce the length of the prompt.`,
    param,
    "context_length_exceeded",
  );
}

function contextExceeded(base: BaseModelInfo, prompt: number, completion: number, param: string) {
  return invalidRequest(
    `This model's maximum context length is ${base.contextLength} tokens. However, you requested ` +
      `${prompt + completion} tokens (${prompt} in the prompt, ${completion} for the completion). ` +
      "Please reduce the length of the prompt or the completion.",
    param,
    "context_length_exceeded",
  );
}

function admit(
  body: Common,
  base: BaseModelInfo,
  promptTokenIds: number[],
  promptParam: string,
  requestedMaxTokens: number | null | undefined,
  maxTokensParam: string,
  logprobs: { on: boolean; top: number },
): Admitted {
  // As OpenAI and vLLM refuse it: options for a stream that the request does not ask for.
  if (body.stream_options != null && body.stream !== true) {
    throw invalidRequest(
      "The 'stream_options' parameter is only allowed when 'stream' is true.",
      "stream_options",
    );
  }
  const choices = body.n ?? 1;
  if (choices < 1 || choices > MAX_CHOICES) {
    throw invalidRequest(`n must be between 1 and ${MAX_CHOICES}, got ${choices}`, "n");
  }
  const prompt = promptTokenIds.length;
  if (prompt >= base.contextLength) {
    // The completion as the request asked for it, else the default it would get (one token at least).
    const completion = requestedMaxTokens ?? base.samplingDefaults.max_tokens ?? 1;
    throw contextExceeded(base, prompt, completion, promptParam);
  }
  const room = base.contextLength - prompt;
  if (requestedMaxTokens != null && requestedMaxTokens > room) {
    throw contextExceeded(base, prompt, requestedMaxTokens, maxTokensParam);
  }
  const stop = body.stop == null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop;
  const vocab = base.tokenizer.vocabSize;
  const bias = logitBias(body.logit_bias, vocab);
  for (const param of ["stop_token_ids", "allowed_token_ids"] as const) {
    const outside = body[param]?.find((id) => id >= vocab);
    if (outside !== undefined) {
      throw invalidRequest(`${param}: ${outside} is outside the vocabulary of ${vocab}`, param);
    }
  }
  // What the request leaves out comes from the base's generation_config.json, else OpenAI's (and vLLM's) defaults.
  const defaults = base.samplingDefaults;
  const maxTokens = requestedMaxTokens ?? Math.min(defaults.max_tokens ?? room, room);
  const minTokens = body.min_tokens ?? 0;
  if (minTokens > maxTokens) {
    throw invalidRequest(`min_tokens (${minTokens}) must not exceed max_tokens (${maxTokens})`, "min_tokens");
  }
  const eos = body.ignore_eos === true ? [] : base.tokenizer.eosTokenIds;
  const promptLogprobs = body.prompt_logprobs ?? null;
  if (promptLogprobs !== null && body.stream === true) {
    throw invalidRequest("prompt_logprobs is not available with stream: true", "prompt_logprobs");
  }
  return {
    prompts: [{ tokenIds: promptTokenIds, maxTokens }],
    sampling: {
      max_tokens: maxTokens,
      temperature: body.temperature ?? defaults.temperature ?? 1,
      top_p: body.top_p ?? defaults.top_p ?? 1,
      // -1 is vLLM's "off", 0 the wire's.
      top_k: Math.max(0, body.top_k ?? defaults.top_k ?? 0),
      min_p: body.min_p ?? defaults.min_p ?? 0,
      seed: body.seed ?? null,
      presence_penalty: body.presence_penalty ?? 0,
      frequency_penalty: body.frequency_penalty ?? 0,
      repetition_penalty: body.repetition_penalty ?? defaults.repetition_penalty ?? 1,
      ...(bias.length > 0 ? { logit_bias: bias } : {}),
      min_tokens: minTokens,
      ignore_eos: body.ignore_eos === true,
      stop,
      ...(body.include_stop_str_in_output === true ? { include_stop_str_in_output: true } : {}),
      stop_token_ids: [...new Set([...eos, ...(body.stop_token_ids ?? [])])],
      ...(body.allowed_token_ids ? { allowed_token_ids: [...new Set(body.allowed_token_ids)] } : {}),
      ...(body.bad_words?.length ? { bad_words_ids: badWordsIds(body.bad_words, base) } : {}),
      logprobs: logprobs.on,
      top_logprobs: logprobs.top,
      prompt_logprobs: promptLogprobs,
    },
    choices,
    stream: body.stream === true,
    includeUsage: body.stream === true && body.stream_options?.include_usage === true,
    ...(promptLogprobs !== null ? { promptLogprobs } : {}),
    ...(body.prompt_cache_key ? { cacheKey: body.prompt_cache_key } : {}),
  };
}

/** What a chat request's messages become: the prompt's token ids, and the tools, format and reasoning it runs with. */
export interface ChatPrompt {
  ids: number[];
  tools: ToolPlan | null;
  format: SamplingParams["response_format"];
  reasoning: ReasoningPlan;
}

/**
 * A chat request's prompt as the worker prefills it: the messages (tool results and calls included) and
 * the tools through the base's chat template, thinking switched as the request's reasoning effort says.
 * Also what POST /tokenize counts (routes/tokenize.ts).
 */
export function chatPrompt(body: ChatCompletionRequest, base: BaseModelInfo): ChatPrompt {
  const tools = planTools(body);
  const responseFormat = checkFormat(body);
  let format = oneFormat(responseFormat, body);
  if (tools?.forced) {
    if (format !== responseFormat) {
      throw invalidRequest(
        "structured_outputs and guided_* cannot be given with a tool_choice that requires a call: the call's arguments follow its function's parameters",
        "tool_choice",
      );
    }
    // The answer is a call: a response_format holds text answers, which this one is not.
    format = forcedCallFormat(tools);
  } else if (tools && responseFormat) format = callOrAnswerFormat(tools, responseFormat);
  const { effort, param: effortParam } = requestedEffort(body);
  const planned = planReasoning(effort, base.tokenizer.reasoning, format !== undefined, effortParam);
  const continued = body.continue_final_message === true;
  const generationPrompt = body.add_generation_prompt ?? !continued;
  if (continued && generationPrompt) {
    throw invalidRequest(
      "continue_final_message and add_generation_prompt cannot both be true",
      "continue_final_message",
    );
  }
  if (continued && format) {
    throw invalidRequest(
      "continue_final_message cannot be combined with a response_format or a required tool call: the format would start over after the final message",
      "continue_final_message",
    );
  }
  const last = body.messages.length - 1;
  if (continued && body.messages[last]!.role !== "assistant") {
    throw invalidRequest(
      "continue_final_message needs the last message to be the assistant's",
      "continue_final_message",
    );
  }
  const conversation = toolMessages(body.messages.map(chatMessage), tools, base.tokenizer.templateTakesTools);
  let text = base.tokenizer.applyChatTemplate(conversation.messages, {
    addGenerationPrompt: generationPrompt,
    ...(conversation.tools ? { tools: conversation.tools } : {}),
    ...(planned.enableThinking !== undefined ? { enableThinking: planned.enableThinking } : {}),
  });
  if (continued) {
    const cut = cutAfterFinalMessage(text, messageText(body.messages[last]!, last));
    if (cut === null) {
      throw invalidRequest(
        `messages[${last}]: continue_final_message needs the final message's content, as the chat template writes it`,
        `messages.${last}.content`,
      );
    }
    text = cut;
  }
  const keep = tokensKept(body, base, body.max_completion_tokens ?? body.max_tokens);
  if (keep === null) refuseSurelyTooLong(text, base, "messages");
  // The template writes the special tokens (bos included) itself.
  const ids =
    keep === null
      ? base.tokenizer.encode(text, { addSpecialTokens: false })
      : encodedTail(text, keep, base, false);
  // Without the generation prompt the answer goes on from the conversation as written: it opens no
  // reasoning block of its own to split off or to gate.
  const reasoning: ReasoningPlan = generationPrompt
    ? planned
    : {
        ...(planned.enableThinking !== undefined ? { enableThinking: planned.enableThinking } : {}),
        split: null,
      };
  return { ids, tools, format, reasoning };
}

/**
 * vLLM's best_of above n asks the server to pick the best completions and drop the rest, which Luminet does
 * not: refused, chat and completions alike.
 */
function refuseBestOf(body: { best_of?: number | null; n?: number | null }): void {
  if (body.best_of != null && body.best_of !== (body.n ?? 1)) {
    throw invalidRequest(
      `best_of must equal n (${body.n ?? 1}) here, got ${body.best_of}: every completion generated is returned`,
      "best_of",
    );
  }
}

export function admitChat(body: ChatCompletionRequest, base: BaseModelInfo): Admitted {
  refuseBestOf(body);
  const { ids, tools, format, reasoning } = chatPrompt(body, base);
  if (body.top_logprobs != null && body.top_logprobs > 0 && body.logprobs !== true) {
    throw invalidRequest("top_logprobs needs logprobs set to true", "top_logprobs");
  }
  if (body.max_tokens != null && body.max_completion_tokens != null) {
    throw invalidRequest("give max_completion_tokens or max_tokens, not both", "max_tokens");
  }
  const maxTokens = body.max_completion_tokens ?? body.max_tokens;
  const param = body.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens";
  const admitted = admit(
    body,
    base,
    truncatedPrompt(ids, body, base, maxTokens),
    "messages",
    maxTokens,
    param,
    {
      on: body.logprobs === true,
      top: body.top_logprobs ?? 0,
    },
  );
  if (format) admitted.sampling.response_format = format;
  if (tools?.forced) {
    // A required or named call is generated whole under its schema: a stop string would cut it into text.
    admitted.sampling.stop = [];
    delete admitted.sampling.include_stop_str_in_output;
  }
  if (reasoning.tags) admitted.sampling.reasoning_tags = reasoning.tags;
  return { ...admitted, tools, reasoning: reasoning.split };
}

/**
 * A completions request's prompts: a text, token ids, or a list of either (each list entry one prompt).
 * With a suffix each text is the prefix of a fill-in-the-middle prompt (fillInTheMiddle). Each comes as
 * the call that tokenizes it, so a list is tokenized one prompt at a time, each checked before the next
 * (tokenizing holds the event loop: a list of long prompts must stop at the first that does not fit).
 */
function completionPrompts(
  prompt: CompletionRequest["prompt"],
  suffix: string,
  base: BaseModelInfo,
  /** The last tokens truncate_prompt_tokens keeps of each prompt; null: not truncated. */
  keep: number | null,
): (() => number[])[] {
  const encode = (text: string) => {
    if (keep === null) refuseSurelyTooLong(suffix === "" ? text : text + suffix, base, "prompt");
    if (suffix !== "") return fillInTheMiddle(text, suffix, base);
    return keep === null
      ? base.tokenizer.encode(text, { addSpecialTokens: true })
      : encodedTail(text, keep, base, true);
  };
  if (typeof prompt === "string") return [() => encode(prompt)];
  if (prompt.length === 0) throw invalidRequest("prompt is empty", "prompt");
  if (suffix !== "" && prompt.some((one) => typeof one !== "string")) {
    throw invalidRequest("suffix needs the prompt as text, not token ids", "prompt");
  }
  // A list of token ids is one prompt; a list of strings or of id lists is several.
  if (typeof prompt[0] === "number") return [() => prompt as number[]];
  return (prompt as (string | number[])[]).map((one) => () => (typeof one === "string" ? encode(one) : one));
}

/**
 * OpenAI's `suffix`: the model writes what goes between the prompt and the suffix, in the fill-in-the-middle
 * form its tokens say (worker/engine/fim-tokens.ts); a base without them cannot.
 */
function fillInTheMiddle(prefix: string, suffix: string, base: BaseModelInfo): number[] {
  const tokens = base.tokenizer.fillInTheMiddle;
  if (!tokens) {
    throw invalidRequest(
      `suffix needs a model trained to fill in the middle; ${base.name} has no fill-in-the-middle tokens`,
      "suffix",
    );
  }
  const encode = (text: string) => base.tokenizer.encode(text, { addSpecialTokens: false });
  // What the tokenizer puts before any text: its bos, where it adds one.
  const start = base.tokenizer.encode("", { addSpecialTokens: true });
  return fimPromptIds(tokens, start, encode(prefix), encode(suffix));
}

export function admitCompletion(body: CompletionRequest, base: BaseModelInfo): Admitted {
  const echo = body.echo === true;
  const suffix = body.suffix ?? "";
  if (suffix !== "" && echo) throw invalidRequest("echo cannot be combined with suffix", "echo");
  if (body.max_tokens === 0 && !echo) {
    throw invalidRequest("max_tokens must be at least 1 (0 only with echo: true)", "max_tokens");
  }
  refuseBestOf(body);
  const keep = tokensKept(body, base, body.max_tokens ?? COMPLETIONS_DEFAULT_MAX_TOKENS);
  const prompts = completionPrompts(body.prompt, suffix, base, keep);
  const runs = prompts.length * (body.n ?? 1);
  if (runs > MAX_RUNS) {
    throw invalidRequest(
      `${prompts.length} prompts × n ${body.n ?? 1} asks for ${runs} completions; at most ${MAX_RUNS} are allowed`,
      // One prompt: n alone is too large.
      prompts.length === 1 ? "n" : "prompt",
    );
  }
  const vocab = base.tokenizer.vocabSize;
  const top = body.logprobs ?? null;
  // Each prompt admitted alone: its own context check and max_tokens; the sampling is the same for all.
  const givenLengths: number[] = [];
  const each = prompts.map((tokenize) => {
    const given = tokenize();
    givenLengths.push(given.length);
    if (given.length === 0) throw invalidRequest("prompt is empty", "prompt");
    const bad = given.find((id) => id >= vocab);
    if (bad !== undefined) {
      throw invalidRequest(
        `prompt holds token id ${bad}, outside the vocabulary of ${vocab} tokens`,
        "prompt",
      );
    }
    const ids = truncatedPrompt(given, body, base, body.max_tokens ?? COMPLETIONS_DEFAULT_MAX_TOKENS);
    // The default shrinks to the room the prompt leaves; a prompt that leaves none is refused asking for it.
    const room = base.contextLength - ids.length;
    const maxTokens =
      body.max_tokens ??
      (room > 0 ? Math.min(COMPLETIONS_DEFAULT_MAX_TOKENS, room) : COMPLETIONS_DEFAULT_MAX_TOKENS);
    return admit(body, base, ids, "prompt", maxTokens, "max_tokens", { on: top !== null, top: top ?? 0 });
  });
  const admitted: Admitted = { ...each[0]!, prompts: each.flatMap((a) => a.prompts) };
  const format = oneFormat(responseFormatOf(body.response_format), body);
  if (format) admitted.sampling.response_format = format;
  if (!echo) return admitted;
  // Echoed logprobs start with the prompt's tokens', which the worker scores as vLLM's prompt_logprobs.
  if (top !== null) {
    const asked = admitted.sampling.prompt_logprobs;
    admitted.sampling.prompt_logprobs = asked === null ? top : Math.max(asked, top);
  }
  // A truncated prompt echoes what ran: its ids decoded.
  for (const [i, prompt] of admitted.prompts.entries()) {
    prompt.echo =
      prompt.tokenIds.length < givenLengths[i]!
        ? base.tokenizer.decode(prompt.tokenIds, { skipSpecialTokens: true })
        : echoedText(body.prompt, i, prompt.tokenIds, base);
  }
  return admitted;
}

/** The text an echo repeats of prompt `index`: the text given, or its ids decoded. */
function echoedText(
  prompt: CompletionRequest["prompt"],
  index: number,
  ids: readonly number[],
  base: BaseModelInfo,
): string {
  const given = typeof prompt === "string" ? prompt : prompt[index];
  if (typeof given === "string") return given;
  return base.tokenizer.decode(ids, { skipSpecialTokens: true });
}
