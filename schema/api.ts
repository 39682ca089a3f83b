// The public HTTP API's shapes, OpenAI-compatible: request bodies as zod schemas (the runtime check and the
// static type at once) and the response, chunk, model-list and error bodies as types derived from schemas.
// Unknown request fields are dropped, as OpenAI ignores them; fields OpenAI has but Luminet cannot honour
// are declared so a request using them gets a clear 400 instead of being silently served differently.
import { z } from "zod";

// ---------------------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------------------

/**
 * A content part as OpenAI's SDKs send one: text, or in an assistant message a refusal. Admission
 * (gateway/admission.ts) refuses the other kinds (images, audio, files) by name and position, as the
 * Responses API's parts are refused.
 */
const ContentPart = z.object({
  type: z.string(),
  text: z.string().optional(),
  refusal: z.string().optional(),
});
export type ContentPart = z.infer<typeof ContentPart>;

/** A message's content: a string, or content parts (OpenAI's array form). */
const Content = z.union([z.string(), z.array(ContentPart)], {
  error: 'must be a string or a list of content parts ({"type": "text", "text": …})',
});

/** Admitted content parts as one text: an assistant's refusal part is its text, as the Responses API reads one. */
export function contentPartsText(parts: readonly ContentPart[]): string {
  return parts.map((part) => (part.type === "refusal" ? (part.refusal ?? "") : (part.text ?? ""))).join("");
}

/** A string kept in a Postgres text column, which cannot hold U+0000: refused up front with a clear error. */
export const textColumnString = () =>
  z.string().refine((s) => !s.includes("\u0000"), "must not hold a NUL character (U+0000)");

/**
 * OpenAI's metadata: up to 16 pairs, keys up to 64 characters, values up to 512 (batches, responses, stored
 * chat completions).
 */
export const Metadata = z
  .record(z.string().max(64), z.string().max(512))
  .refine((m) => Object.keys(m).length <= 16, "at most 16 keys");
export type Metadata = z.infer<typeof Metadata>;

export const ChatRole = z.enum(["system", "developer", "user", "assistant", "tool"]);
export type ChatRole = z.infer<typeof ChatRole>;

/** A function call as OpenAI writes it: the arguments are JSON text. */
export const FunctionToolCall = z.object({
  id: z.string().min(1),
  type: z.literal("function"),
  function: z.object({ name: z.string().min(1), arguments: z.string() }),
});
export type FunctionToolCall = z.infer<typeof FunctionToolCall>;

/** A custom tool's call (OpenAI's custom tools): its input is free text, held to the tool's format. */
export const CustomToolCall = z.object({
  id: z.string().min(1),
  type: z.literal("custom"),
  custom: z.object({ name: z.string().min(1), input: z.string() }),
});
export type CustomToolCall = z.infer<typeof CustomToolCall>;

export const ToolCall = z.discriminatedUnion("type", [FunctionToolCall, CustomToolCall]);
export type ToolCall = z.infer<typeof ToolCall>;

const ToolName = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1-64 letters, digits, _ or -");

/** A tool named in tool_choice (or in its allowed_tools): a function or a custom tool. */
const NamedToolChoice = z.discriminatedUnion("type", [
  z.object({ type: z.literal("function"), function: z.object({ name: z.string() }) }),
  z.object({ type: z.literal("custom"), custom: z.object({ name: z.string() }) }),
]);

/**
 * What a custom tool's input is (OpenAI's custom tools): any text, or a string of a grammar in Lark's
 * syntax or a regex (gateway/tool-calls.ts; the worker's grammar holds it).
 */
export const CustomToolFormat = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }),
  z.object({
    type: z.literal("grammar"),
    grammar: z.object({
      definition: z.string().min(1),
      syntax: z.enum(["lark", "regex"], { error: "must be lark or regex" }),
    }),
  }),
]);
export type CustomToolFormat = z.infer<typeof CustomToolFormat>;

/** A tool's description, null taken as left out (as a message's fields: ChatMessageIn), so templates never see null. */
function withoutNullDescription<T extends { description?: string | null | undefined }>({
  description,
  ...tool
}: T) {
  return { ...tool, ...(description != null ? { description } : {}) };
}

export const ChatMessageIn = z
  .object({
    role: ChatRole,
    // An assistant turn may carry null content in OpenAI's schema (when it held tool calls).
    content: Content.nullable(),
    name: z.string().nullish(),
    /** An assistant turn's function calls. */
    tool_calls: z.array(ToolCall).nullish(),
    /** A tool message: the call it answers. */
    tool_call_id: z.string().nullish(),
    /** An assistant turn's reasoning, sent back as DeepSeek's and vLLM's APIs take it (gateway/reasoning.ts). */
    reasoning_content: z.string().nullable().optional(),
  })
  // Null as left out: clients send an earlier turn back as they got it, `tool_calls: None` and all
  // (Python's serialized messages, LangChain); the chat template then sees it absent, as when not sent.
  .transform(({ name, tool_calls, tool_call_id, ...message }) => ({
    ...message,
    ...(name != null ? { name } : {}),
    ...(tool_calls != null ? { tool_calls } : {}),
    ...(tool_call_id != null ? { tool_call_id } : {}),
  }));
export type ChatMessageIn = z.infer<typeof ChatMessageIn>;

/**
 * OpenAI takes 4 stop strings, vLLM any number; evaluation harnesses send a task's stop sequences and the
 * end-of-text string (lm-eval-harness: often 4 or 5), so more than OpenAI's are taken.
 */
export const MAX_STOP_STRINGS = 16;

const Stop = z
  .union([z.string().min(1), z.array(z.string().min(1)).max(MAX_STOP_STRINGS)], {
    error: `must be a non-empty string or a list of at most ${MAX_STOP_STRINGS} non-empty strings`,
  })
  .nullable();
const Penalty = z.number().min(-2).max(2).nullable();

/** Most ids one allowed_token_ids may list. */
export const MAX_ALLOWED_TOKEN_IDS = 4_096;
/** Most words one bad_words may list. */
export const MAX_BAD_WORDS = 256;
/**
 * Most characters in one bad word, and in all of them: each is tokenized twice on the gateway's event loop,
 * so without a bound one request of megabytes of "words" holds every other request for seconds.
 */
export const MAX_BAD_WORD_CHARS = 128;
export const MAX_BAD_WORDS_CHARS = 8_192;

/** vLLM's sampling parameters beyond OpenAI's, as its clients send them (the OpenAI SDKs' extra_body). */
export const ExtraSampling = {
  /** Keep the k most likely tokens; 0 or -1 = off. */
  top_k: z.int().min(-1).nullable().optional(),
  /** Keep tokens at least this fraction as likely as the most likely one; 0 = off. */
  min_p: z.number().min(0).max(1).nullable().optional(),
  /** Hugging Face's: above 1 discourages every token of the prompt and output; 1 = off. */
  repetition_penalty: z.number().gt(0).nullable().optional(),
  /** No stop token or stop string ends the answer before this many tokens. */
  min_tokens: z.int().min(0).nullable().optional(),
  /** The base's end-of-sequence tokens do not end the answer (benchmark clients send it). */
  ignore_eos: z.boolean().nullable().optional(),
  /** More tokens that end the answer, ids of the base's vocabulary. */
  stop_token_ids: z.array(z.int().min(0)).max(256, "at most 256 token ids").nullable().optional(),
  /** The stop string that ends the answer is kept at its end. */
  include_stop_str_in_output: z.boolean().nullable().optional(),
  /** Only these tokens may be drawn, ids of the base's vocabulary (an end-of-sequence token only if listed). */
  allowed_token_ids: z
    .array(z.int().min(0))
    .min(1, "must list at least one token id")
    .max(MAX_ALLOWED_TOKEN_IDS, `at most ${MAX_ALLOWED_TOKEN_IDS} token ids`)
    .nullable()
    .optional(),
  /** Words the answer never holds, as the base's tokenizer writes them (gateway/admission.ts, badWordsIds). */
  bad_words: z
    .array(
      z
        .string()
        .trim()
        .min(1, "a bad word must not be blank")
        .max(MAX_BAD_WORD_CHARS, `a bad word holds at most ${MAX_BAD_WORD_CHARS} characters`),
    )
    .max(MAX_BAD_WORDS, `at most ${MAX_BAD_WORDS} words`)
    .refine(
      (words) => words.reduce((sum, word) => sum + word.length, 0) <= MAX_BAD_WORDS_CHARS,
      `the words hold at most ${MAX_BAD_WORDS_CHARS} characters together`,
    )
    .nullable()
    .optional(),
};
const PositiveInt = z.int().positive().nullable();

/** OpenAI's service_tier; "flex" is served as a batch line is, at the batch price (gateway/service-tier.ts). */
export const ServiceTierIn = z.enum(["auto", "default", "flex", "priority"], {
  error: "must be auto, default, flex or priority",
});
export type ServiceTierIn = z.infer<typeof ServiceTierIn>;

/** Most strings one choice constraint may list (vLLM's structured outputs `choice`). */
export const MAX_CHOICE_STRINGS = 256;
const ChoiceList = z
  .array(z.string().min(1, "a choice must not be empty"))
  .min(1, "must list at least one choice")
  .max(MAX_CHOICE_STRINGS, `at most ${MAX_CHOICE_STRINGS} choices`);
/** A JSON schema as an object, or as a string holding one (vLLM takes both). */
const JsonSchemaIn = z.union([z.record(z.string(), z.unknown()), z.string()]);

/**
 * vLLM's structured outputs, chat and completions (gateway/structured-outputs.ts): `structured_outputs` and
 * the `guided_*` fields it replaced. One at most, and not with a response_format. Its tuning flags
 * (disable_any_whitespace …) are ignored; a structural tag is refused.
 */
export const StructuredOutputsIn = {
  structured_outputs: z
    .object({
      choice: ChoiceList.nullable().optional(),
      regex: z.string().min(1).nullable().optional(),
      json: JsonSchemaIn.nullable().optional(),
      json_object: z.boolean().nullable().optional(),
      grammar: z.string().nullable().optional(),
      structural_tag: z.unknown().optional(),
    })
    .nullable()
    .optional(),
  guided_choice: ChoiceList.nullable().optional(),
  guided_regex: z.string().min(1).nullable().optional(),
  guided_json: JsonSchemaIn.nullable().optional(),
  guided_grammar: z.string().nullable().optional(),
};

/** OpenAI's response_format: "text", "json_object" or "json_schema" (chat, and completions as vLLM takes it). */
const ResponseFormatIn = z
  .object({
    type: z.string(),
    /** With type "json_schema": OpenAI's structured outputs. */
    json_schema: z
      .object({
        name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1-64 letters, digits, _ or -"),
        description: z.string().nullish(),
        schema: z.record(z.string(), z.unknown()).optional(),
        strict: z.boolean().nullable().optional(),
      })
      .optional(),
  })
  .nullable()
  .optional();

/** Parameters chat and legacy completions share, with OpenAI's ranges. */
const Sampling = {
  model: z.string().min(1),
  max_tokens: PositiveInt.optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  ...ExtraSampling,
  seed: z.int().nullable().optional(),
  stop: Stop.optional(),
  presence_penalty: Penalty.optional(),
  frequency_penalty: Penalty.optional(),
  n: z.int().nullable().optional(),
  /** vLLM's: how many runs to choose the best n of; only n itself is taken (gateway/admission.ts). */
  best_of: z.int().nullable().optional(),
  user: z.string().nullable().optional(),
  /**
   * OpenAI's: requests naming the same key (within an org) go to the same worker, so prompts that share a
   * long prefix meet in its prefix cache (gateway/generation.ts).
   */
  prompt_cache_key: z.string().max(1024, "at most 1,024 characters").nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().nullable().optional() }).nullable().optional(),
  /** Token id (as a string key) to a bias added to its logit; checked against the base's vocabulary. */
  logit_bias: z.record(z.string(), z.number()).nullable().optional(),
  service_tier: ServiceTierIn.nullable().optional(),
  /**
   * vLLM's: the answer carries each prompt token's logprob given the tokens before it, with this many
   * alternatives (PromptLogprobsOut); not with stream, as in vLLM.
   */
  prompt_logprobs: z.int().min(0).max(20).nullable().optional(),
  /**
   * vLLM's: only the prompt's last k tokens run (left truncation); -1: as many as leave room for max_tokens
   * in the context (gateway/admission.ts, truncatedPrompt).
   */
  truncate_prompt_tokens: z
    .int()
    .refine((k) => k === -1 || k >= 1, "must be -1 or at least 1")
    .nullable()
    .optional(),
  ...StructuredOutputsIn,
};

/** The tier an answer was served at, present when the request named one. */
const ServedTier = z.enum(["default", "flex", "priority"]).optional();

export const ChatCompletionRequest = z.object({
  ...Sampling,
  messages: z.array(ChatMessageIn).min(1, "messages must hold at least one message"),
  max_completion_tokens: PositiveInt.optional(),
  logprobs: z.boolean().nullable().optional(),
  top_logprobs: z.int().min(0).max(20).nullable().optional(),
  /**
   * Functions the model may call, their parameters JSON schemas, and custom tools, whose input is text of
   * a format (gateway/tool-calls.ts).
   */
  tools: z
    .array(
      z.discriminatedUnion("type", [
        z.object({
          type: z.literal("function"),
          function: z
            .object({
              name: ToolName,
              description: z.string().nullish(),
              parameters: z.record(z.string(), z.unknown()).optional(),
              strict: z.boolean().nullable().optional(),
            })
            .transform(withoutNullDescription),
        }),
        z.object({
          type: z.literal("custom"),
          custom: z
            .object({
              name: ToolName,
              description: z.string().nullish(),
              format: CustomToolFormat.optional(),
            })
            .transform(withoutNullDescription),
        }),
      ]),
    )
    .max(128, "at most 128 tools")
    .nullable()
    .optional(),
  tool_choice: z
    .union([
      z.enum(["none", "auto", "required"]),
      NamedToolChoice,
      /** OpenAI's allowed_tools: every tool reaches the prompt, but only these may be called. */
      z.object({
        type: z.literal("allowed_tools"),
        allowed_tools: z.object({
          mode: z.enum(["auto", "required"]),
          tools: z.array(NamedToolChoice).min(1, "must name at least one tool"),
        }),
      }),
    ])
    .nullable()
    .optional(),
  parallel_tool_calls: z.boolean().nullable().optional(),
  /**
   * Whether the completion is kept for GET /v1/chat/completions/{id} and its list (default false, as at
   * OpenAI; gateway/chat-completion-store.ts), with its metadata.
   */
  store: z.boolean().nullable().optional(),
  metadata: Metadata.nullable().optional(),
  // The deprecated function-calling fields, and outputs and tools a text model does not have: declared
  // only to be refused (admission.ts).
  functions: z.array(z.unknown()).nullable().optional(),
  function_call: z.unknown().optional(),
  modalities: z.array(z.string()).nullable().optional(),
  audio: z.unknown().optional(),
  web_search_options: z.unknown().optional(),
  /** OpenAI's reasoning effort (gateway/reasoning.ts). */
  reasoning_effort: z.string().nullable().optional(),
  /** vLLM's chat template arguments, as Qwen3's clients send `enable_thinking` (gateway/reasoning.ts). */
  chat_template_kwargs: z.record(z.string(), z.unknown()).nullable().optional(),
  /** vLLM's: the prompt ends with the template's generation prompt (default true); false: after the last message. */
  add_generation_prompt: z.boolean().nullable().optional(),
  /**
   * vLLM's: the answer continues the last message, the assistant's (a prefill such as "{"), and the
   * template's generation prompt is left out (gateway/final-message.ts).
   */
  continue_final_message: z.boolean().nullable().optional(),
  response_format: ResponseFormatIn,
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

export const CompletionRequest = z.object({
  ...Sampling,
  /** The prompts: a text, a list of texts, token ids, or a list of token id lists (one prompt each). */
  prompt: z.union(
    [
      z.string(),
      z.array(z.string()),
      z.array(z.int().nonnegative()),
      z.array(z.array(z.int().nonnegative())),
    ],
    { error: "must be a string, a list of strings, a list of token ids or a list of token id lists" },
  ),
  /** 0 only with echo: the prompt is scored and nothing is generated. */
  max_tokens: z.int().min(0).nullable().optional(),
  /** In legacy completions logprobs is how many top alternatives to return per token (0-5). */
  logprobs: z.int().min(0).max(5).nullable().optional(),
  /** The answer's text starts with the prompt's, and its logprobs (when asked for) with the prompt's tokens'. */
  echo: z.boolean().nullable().optional(),
  suffix: z.string().nullable().optional(),
  /** As vLLM takes it on completions: the text follows the format, as structured_outputs would make it. */
  response_format: ResponseFormatIn,
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

// ---------------------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------------------

export const UsageBody = z.object({
  prompt_tokens: z.int(),
  completion_tokens: z.int(),
  total_tokens: z.int(),
  /** As OpenAI reports it: the prompt tokens a cache covered (the worker's prefix cache). */
  prompt_tokens_details: z.object({ cached_tokens: z.int() }),
  /** A reasoning model's answer: the completion tokens that were reasoning (gateway/reasoning.ts). */
  completion_tokens_details: z.object({ reasoning_tokens: z.int() }).optional(),
});
export type UsageBody = z.infer<typeof UsageBody>;

export const FinishReasonOut = z.enum(["stop", "length", "tool_calls"]);
export type FinishReasonOut = z.infer<typeof FinishReasonOut>;

const TopLogprobOut = z.object({
  token: z.string(),
  logprob: z.number(),
  bytes: z.array(z.int()).nullable(),
});

export const ChatTokenLogprob = TopLogprobOut.extend({ top_logprobs: z.array(TopLogprobOut) });
export type ChatTokenLogprob = z.infer<typeof ChatTokenLogprob>;

/** OpenAI's: the content's tokens, and a refusal's (always null here: the models answer, they do not refuse). */
const ChatLogprobs = z
  .object({ content: z.array(ChatTokenLogprob).nullable(), refusal: z.null() })
  .nullable();

/**
 * vLLM's prompt_logprobs: per prompt token, null for the first, else a map from token id to its logprob,
 * its rank in the vocabulary and its text, holding the prompt's token and the most likely alternatives.
 */
export const PromptLogprobsOut = z.array(
  z
    .record(z.string(), z.object({ logprob: z.number(), rank: z.int(), decoded_token: z.string() }))
    .nullable(),
);
export type PromptLogprobsOut = z.infer<typeof PromptLogprobsOut>;

export const ChatCompletion = z.object({
  id: z.string(),
  object: z.literal("chat.completion"),
  created: z.int(),
  model: z.string(),
  service_tier: ServedTier,
  choices: z.array(
    z.object({
      index: z.int(),
      message: z.object({
        role: z.literal("assistant"),
        /** null when the answer is a function call. */
        content: z.string().nullable(),
        /** A reasoning model's reasoning (gateway/reasoning.ts), as DeepSeek's and vLLM's APIs name it. */
        reasoning_content: z.string().optional(),
        refusal: z.null(),
        tool_calls: z.array(ToolCall).optional(),
      }),
      logprobs: ChatLogprobs,
      finish_reason: FinishReasonOut,
    }),
  ),
  usage: UsageBody,
  /** With prompt_logprobs: the prompt's (vLLM puts them here, once for every choice). */
  prompt_logprobs: PromptLogprobsOut.optional(),
});
export type ChatCompletion = z.infer<typeof ChatCompletion>;

export const ChatCompletionChunk = z.object({
  id: z.string(),
  object: z.literal("chat.completion.chunk"),
  created: z.int(),
  model: z.string(),
  service_tier: ServedTier,
  choices: z.array(
    z.object({
      index: z.int(),
      delta: z.object({
        role: z.literal("assistant").optional(),
        content: z.string().optional(),
        reasoning_content: z.string().optional(),
        /**
         * Calls as OpenAI streams them: a call's first delta has its id, type and name, the later ones
         * pieces of its arguments (a custom tool's: of its input), matched by index.
         */
        tool_calls: z
          .array(
            z.union([
              z.object({
                index: z.int(),
                id: z.string().optional(),
                type: z.literal("function").optional(),
                function: z.object({ name: z.string().optional(), arguments: z.string().optional() }),
              }),
              z.object({
                index: z.int(),
                id: z.string().optional(),
                type: z.literal("custom").optional(),
                custom: z.object({ name: z.string().optional(), input: z.string().optional() }),
              }),
            ]),
          )
          .optional(),
      }),
      logprobs: ChatLogprobs.optional(),
      finish_reason: FinishReasonOut.nullable(),
    }),
  ),
  /** Present on every chunk when include_usage is asked for: null until the last one. */
  usage: UsageBody.nullable().optional(),
});
export type ChatCompletionChunk = z.infer<typeof ChatCompletionChunk>;

/**
 * Legacy completions' logprobs: parallel arrays, one entry per generated token, after one per prompt token
 * with echo (the prompt's first token has none: null).
 */
export const CompletionLogprobs = z.object({
  tokens: z.array(z.string()),
  token_logprobs: z.array(z.number().nullable()),
  top_logprobs: z.array(z.record(z.string(), z.number()).nullable()),
  text_offset: z.array(z.int()),
});
export type CompletionLogprobs = z.infer<typeof CompletionLogprobs>;

const CompletionChoice = z.object({
  index: z.int(),
  text: z.string(),
  logprobs: CompletionLogprobs.nullable(),
  finish_reason: FinishReasonOut.nullable(),
  prompt_logprobs: PromptLogprobsOut.optional(),
});

export const Completion = z.object({
  id: z.string(),
  object: z.literal("text_completion"),
  created: z.int(),
  model: z.string(),
  service_tier: ServedTier,
  choices: z.array(CompletionChoice),
  usage: UsageBody.nullable().optional(),
});
export type Completion = z.infer<typeof Completion>;

// ---------------------------------------------------------------------------------------------------------
// Tokenizer (vLLM's POST /tokenize and /detokenize)
// ---------------------------------------------------------------------------------------------------------

/**
 * A text prompt as a completions request would send it, or a chat request's messages (with the tools and
 * reasoning settings that shape its prompt), to count and see as the worker would get them.
 */
export const TokenizeRequest = ChatCompletionRequest.extend({
  messages: z.array(ChatMessageIn).min(1, "messages must hold at least one message").optional(),
  prompt: z.string().optional(),
  /** With prompt: the special tokens (bos) the tokenizer adds, as a completions prompt gets them; default true. */
  add_special_tokens: z.boolean().nullable().optional(),
  /** Each token's text too, in token_strs. */
  return_token_strs: z.boolean().nullable().optional(),
});
export type TokenizeRequest = z.infer<typeof TokenizeRequest>;

export const TokenizeResponse = z.object({
  count: z.int(),
  /** The base's context length: prompt and answer together. */
  max_model_len: z.int(),
  tokens: z.array(z.int()),
  /** With return_token_strs: each token's text (`bytes:\xNN…` for one that ends inside a character). */
  token_strs: z.array(z.string()).nullable(),
});
export type TokenizeResponse = z.infer<typeof TokenizeResponse>;

export const DetokenizeRequest = z.object({
  model: z.string().min(1),
  tokens: z.array(z.int().nonnegative()),
});
export type DetokenizeRequest = z.infer<typeof DetokenizeRequest>;

export const DetokenizeResponse = z.object({ prompt: z.string() });
export type DetokenizeResponse = z.infer<typeof DetokenizeResponse>;

export const ModelCard = z.object({
  id: z.string(),
  object: z.literal("model"),
  created: z.int(),
  owned_by: z.string(),
  /** vLLM's: the context length, prompt and answer together (clients size their prompts by it). */
  max_model_len: z.int(),
  /** vLLM's: the base model an adapter runs on; null for a base. */
  parent: z.string().nullable(),
});
export type ModelCard = z.infer<typeof ModelCard>;

export const ModelList = z.object({ object: z.literal("list"), data: z.array(ModelCard) });
export type ModelList = z.infer<typeof ModelList>;

/** The `type` values OpenAI sends (401 and 404 are invalid_request_error too; `code` tells them apart). */
export const ErrorType = z.enum([
  "invalid_request_error",
  "permission_error",
  "rate_limit_error",
  "insufficient_quota",
  "server_error",
]);
export type ErrorType = z.infer<typeof ErrorType>;

export const ErrorBody = z.object({
  error: z.object({
    message: z.string(),
    type: ErrorType,
    param: z.string().nullable(),
    code: z.string().nullable(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;
