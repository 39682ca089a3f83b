// Wire contracts: the NATS subject names and the zod schemas of every message that crosses a process
// boundary on the bus. Every message carries `v` (the wire version); a build rejects versions it does not
// speak with a clear error instead of misreading them. Payloads are JSON over UTF-8.
import { z } from "zod";

export const WIRE_VERSION = 1;

/** The worker target that means "any worker of this base": the base's shared queue. */
export const ANY_WORKER = "any";

// ---------------------------------------------------------------------------------------------------------
// Subject tokens
// ---------------------------------------------------------------------------------------------------------

/** A name that cannot be turned into a subject token (empty, or the reserved worker id "any"). */
export class SubjectTokenError extends Error {
  override readonly name = "SubjectTokenError";
}

/**
 * Encodes a name (base model, worker id, adapter name) as one NATS subject token that is also a valid
 * JetStream consumer name and KV key token. Base names contain "/", "." and ":" which NATS reserves or
 * forbids, so every byte outside [A-Za-z0-9-] becomes "_" plus two uppercase hex digits of its UTF-8 byte:
 * "meta-llama/Llama-3.1-8B" -> "meta-llama_2FLlama-3_2E1-8B". The mapping is one-to-one and reversible.
 */
export function encodeToken(name: string): string {
  if (name.length === 0) throw new SubjectTokenError("cannot encode an empty name as a subject token");
  let out = "";
  for (const byte of new TextEncoder().encode(name)) {
    const ch = String.fromCharCode(byte);
    out += /[A-Za-z0-9-]/.test(ch) ? ch : `_${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** Reverses encodeToken; throws SubjectTokenError on a token encodeToken could not have produced. */
export function decodeToken(token: string): string {
  if (!/^(?:[A-Za-z0-9-]|_[0-9A-F]{2})+$/.test(token)) {
    throw new SubjectTokenError(`"${token}" is not an encoded subject token`);
  }
  const bytes: number[] = [];
  for (let i = 0; i < token.length; i++) {
    if (token[i] === "_") {
      bytes.push(Number.parseInt(token.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(token.charCodeAt(i));
    }
  }
  return new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(bytes));
}

/** encodeToken for a worker id, refusing the reserved "any". */
export function encodeWorkerId(workerId: string): string {
  if (workerId === ANY_WORKER) {
    throw new SubjectTokenError(`"${ANY_WORKER}" is reserved for the shared queue and cannot be a worker id`);
  }
  return encodeToken(workerId);
}

// ---------------------------------------------------------------------------------------------------------
// Subjects. A deployment may prefix all of them with a namespace (see the bus options); these are the
// unprefixed names.
// ---------------------------------------------------------------------------------------------------------

/**
 * `infer.<base>.<workerId>`, or `infer.<base>.any` for the base's shared queue; with `priority`, that queue's
 * priority lane `infer.<base>.<workerId>.priority`, which the worker drains first (bus/bus.ts, RequestPuller).
 */
export function inferSubject(base: string, workerId: string, priority = false): string {
  const target = workerId === ANY_WORKER ? ANY_WORKER : encodeWorkerId(workerId);
  return `${inferBasePrefix(base)}${target}${priority ? PRIORITY_LANE_SUFFIX : ""}`;
}

const PRIORITY_LANE_SUFFIX = ".priority";

/** What every request queue of a base starts with: `infer.<base>.`. */
export function inferBasePrefix(base: string): string {
  return `infer.${encodeToken(base)}.`;
}

/**
 * The worker whose own queue a subject is, given what follows the base's prefix (`<worker>`, or
 * `<worker>.priority` for its priority lane); null for the base's shared queue and its lane.
 */
export function workerOfInferQueue(afterBasePrefix: string): string | null {
  const target = afterBasePrefix.endsWith(PRIORITY_LANE_SUFFIX)
    ? afterBasePrefix.slice(0, -PRIORITY_LANE_SUFFIX.length)
    : afterBasePrefix;
  return target === ANY_WORKER ? null : decodeToken(target);
}

/**
 * The workers whose own queues (or their lanes) these subjects are, each once; `prefix` is what precedes
 * the worker in each (a namespace's, then inferBasePrefix).
 */
export function workersOfInferQueues(subjects: Iterable<string>, prefix: string): string[] {
  const workers = new Set<string>();
  for (const subject of subjects) {
    const worker = workerOfInferQueue(subject.slice(prefix.length));
    if (worker !== null) workers.add(worker);
  }
  return [...workers];
}

/** `usage.<base>`: one usage event per finished request. */
export function usageSubject(base: string): string {
  return `usage.${encodeToken(base)}`;
}

/** `cancel.<base>`: cancels for requests of one base; the worker running the request acts on it. */
export function cancelSubject(base: string): string {
  return `cancel.${encodeToken(base)}`;
}

/** `control.<base>.<adapter>`: the latest control event per adapter is its current desired state. */
export function controlSubject(base: string, adapter: string): string {
  return `control.${encodeToken(base)}.${encodeToken(adapter)}`;
}

/** Matches every control subject of one base. */
export function controlFilter(base: string): string {
  return `control.${encodeToken(base)}.>`;
}

/** `<inbox>.claim`: where a worker asks the gateway waiting on `inbox` whether it may stream the reply. */
export function claimSubject(inbox: string): string {
  return `${inbox}.claim`;
}

/** The inbox a claim subject belongs to; null for a subject that is not one. */
export function inboxOfClaimSubject(subject: string): string | null {
  return subject.endsWith(".claim") ? subject.slice(0, -".claim".length) : null;
}

/** The heartbeat KV key of one worker: `<base>.<workerId>`. */
export function heartbeatKey(base: string, workerId: string): string {
  return `${encodeToken(base)}.${encodeWorkerId(workerId)}`;
}

// ---------------------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------------------

const version = z.literal(WIRE_VERSION);
const id = z.string().min(1).max(256);
const count = z.int().nonnegative();
const epochMs = z.int().nonnegative();
const subject = z.string().regex(/^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/, "expected a NATS subject");
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, "expected 64 lowercase hex digits");
const tokenId = z.int().nonnegative();

export const FinishReason = z.enum(["stop", "length", "cancelled", "error"]);
export type FinishReason = z.infer<typeof FinishReason>;

/** Where a worker fetches an adapter's weights from, and how to check them. */
export const AdapterBlob = z.object({
  blob_key: z.string().min(1),
  sha256,
  rank: z.int().positive(),
});
export type AdapterBlob = z.infer<typeof AdapterBlob>;

/** The exact adapter (a version, never an alias) a request runs with. */
export const AdapterRef = AdapterBlob.extend({ name: z.string().min(1) });
export type AdapterRef = z.infer<typeof AdapterRef>;

export const SamplingParams = z.object({
  /** 0: only the prompt runs, for its prompt_logprobs (legacy completions' echo with max_tokens 0). */
  max_tokens: count,
  temperature: z.number().min(0),
  top_p: z.number().gt(0).max(1),
  /** 0 disables top-k. */
  top_k: count,
  /** Keeps tokens at least this fraction as likely as the most likely one; 0 disables it. Absent from older gateways. */
  min_p: z.number().min(0).max(1).default(0),
  seed: z.int().nullable(),
  presence_penalty: z.number().min(-2).max(2),
  frequency_penalty: z.number().min(-2).max(2),
  /** 1 disables it. */
  repetition_penalty: z.number().positive(),
  /** Neither stop tokens nor stop strings end the sequence before this many tokens. Absent from older gateways. */
  min_tokens: count.default(0),
  /** The tokenizer's eos ids are no stop tokens: only stop_token_ids are. Absent from older gateways. */
  ignore_eos: z.boolean().default(false),
  /** OpenAI's logit_bias as [token id, bias] pairs, each token once; absent = none. */
  logit_bias: z.array(z.tuple([tokenId, z.number().min(-100).max(100)])).optional(),
  stop: z.array(z.string().min(1)),
  /** vLLM's: the stop string that ends the answer is part of its text. Absent: false. */
  include_stop_str_in_output: z.boolean().optional(),
  stop_token_ids: z.array(tokenId),
  /** vLLM's: only these tokens may be drawn (stop tokens too: one not listed never ends the answer). Absent: any. */
  allowed_token_ids: z.array(tokenId).min(1).optional(),
  /**
   * vLLM's bad_words as the gateway tokenized them: no answer holds one of these token sequences (the last
   * token of each is never drawn after the others). Absent: none.
   */
  bad_words_ids: z.array(z.array(tokenId).min(1)).optional(),
  logprobs: z.boolean(),
  top_logprobs: z.int().min(0).max(20),
  /**
   * Each prompt token's logprob given the tokens before it (the first has none), with this many
   * alternatives, as the raw model gives them (worker/engine/prompt-logprobs.ts): TokenChunk's
   * prompt_logprobs. null: none. Absent from older gateways.
   */
  prompt_logprobs: z.int().min(0).max(20).nullable().default(null),
  /**
   * Structured output: "json_object" (OpenAI's JSON mode, any object) or {json_schema: a JSON Schema the
   * gateway checked against worker/engine/json-schema.ts}, which end when the value is complete; or
   * {regex}, which the whole output matches (vLLM's structured outputs `regex` and `choice`;
   * worker/engine/regex-mode.ts); or {grammar}, EBNF whose root the whole output is (vLLM's `grammar`;
   * worker/engine/grammar-mode.ts). Absent: text.
   */
  response_format: z
    .union([
      z.enum(["text", "json_object"]),
      z.object({ json_schema: z.record(z.string(), z.unknown()) }),
      z.object({ regex: z.string().min(1) }),
      /** syntax: as the request gave it (a custom tool's Lark); absent, told apart as vLLM does. */
      z.object({ grammar: z.string().min(1), syntax: z.enum(["ebnf", "lark"]).optional() }),
    ])
    .optional(),
  /**
   * With a JSON response_format: a reasoning model reasons first, between these tag tokens (the open one
   * forced first; null where the prompt opened the block), and the format holds after the close
   * (worker/engine/reasoning-gate.ts). Absent: the format holds from the first token.
   */
  reasoning_tags: z.object({ open: tokenId.nullable(), close: tokenId }).optional(),
});
export type SamplingParams = z.infer<typeof SamplingParams>;

/** Greedy decoding of exactly `maxTokens` tokens: no penalties, no stop strings or stop tokens, no logprobs. */
export function greedySampling(maxTokens: number): SamplingParams {
  return {
    max_tokens: maxTokens,
    temperature: 0,
    top_p: 1,
    top_k: 0,
    min_p: 0,
    seed: null,
    presence_penalty: 0,
    frequency_penalty: 0,
    repetition_penalty: 1,
    min_tokens: 0,
    ignore_eos: false,
    stop: [],
    stop_token_ids: [],
    logprobs: false,
    top_logprobs: 0,
    prompt_logprobs: null,
  };
}

export const InferenceRequest = z
  .object({
    v: version,
    /** Also the JetStream message id, so a republished request is dropped as a duplicate. */
    id,
    org: id,
    api_key_id: id,
    base: z.string().min(1),
    /** null runs the base model without an adapter. */
    adapter: AdapterRef.nullable(),
    prompt_token_ids: z.array(tokenId).min(1),
    sampling: SamplingParams,
    /** The gateway's reply inbox; it subscribes there before publishing the request. */
    reply: subject,
    created_at: epochMs,
    /** After this instant nobody waits for the reply; a worker drops the request. */
    deadline: epochMs,
    /**
     * A Batch API line or a flex-tier request: the worker admits it after queued live requests, its usage
     * event says so, and it is billed at the base's batch price.
     */
    batch: z.boolean().optional(),
    /**
     * A request at the priority service tier: the worker admits it before queued live requests, its usage
     * event says so, and it is billed at the base's priority price. Never with batch.
     */
    priority: z.boolean().optional(),
  })
  .refine((r) => !(r.batch && r.priority), {
    message: "a request is batch or priority, not both",
    path: ["priority"],
  })
  .meta({ title: "InferenceRequest" });
export type InferenceRequest = z.infer<typeof InferenceRequest>;

const TopLogprob = z.object({
  token: z.string(),
  /** The token's UTF-8 bytes, which `token` cannot carry when a token ends inside a character. */
  bytes: z.array(z.int().min(0).max(255)),
  logprob: z.number().max(0),
});

export const TokenLogprob = TopLogprob.extend({
  token_id: tokenId,
  top: z.array(TopLogprob),
});
export type TokenLogprob = z.infer<typeof TokenLogprob>;

/**
 * A prompt token's logprob: TokenLogprob with the token's rank in the vocabulary (1: the most likely), and
 * the alternatives' token ids.
 */
export const PromptTokenLogprob = TokenLogprob.extend({
  rank: z.int().positive(),
  top: z.array(TopLogprob.extend({ token_id: tokenId })),
});
export type PromptTokenLogprob = z.infer<typeof PromptTokenLogprob>;

export const TokenChunk = z
  .object({
    v: version,
    type: z.literal("chunk"),
    request_id: id,
    /** 0, 1, 2, ... per request, so the gateway sees gaps and order. */
    seq: count,
    token_ids: z.array(tokenId),
    text: z.string(),
    /** One entry per token id, present when the request asked for logprobs. */
    logprobs: z.array(TokenLogprob).optional(),
    /**
     * With sampling.prompt_logprobs: the next prompt tokens' logprobs, from the prompt's second token on,
     * continued over chunks that carry no generated token, all before the first that does.
     */
    prompt_logprobs: z.array(PromptTokenLogprob).optional(),
  })
  .meta({ title: "TokenChunk" });
export type TokenChunk = z.infer<typeof TokenChunk>;

export const Usage = z.object({
  prompt_tokens: count,
  completion_tokens: count,
  /** Of prompt_tokens, those a stored prefix's cache covered on the worker (not prefilled). */
  cached_tokens: count.optional(),
});
export type Usage = z.infer<typeof Usage>;

export const WireErrorBody = z.object({ code: z.string().min(1), message: z.string().min(1) });
export type WireErrorBody = z.infer<typeof WireErrorBody>;

export const Final = z
  .object({
    v: version,
    type: z.literal("final"),
    request_id: id,
    /** The number of chunks sent before it: the gateway knows whether it has seen them all. */
    seq: count,
    finish_reason: FinishReason,
    usage: Usage,
    error: WireErrorBody.optional(),
  })
  .refine((f) => (f.finish_reason === "error") === (f.error !== undefined), {
    message: 'error is required when finish_reason is "error" and only then',
    path: ["error"],
  })
  .meta({ title: "Final" });
export type Final = z.infer<typeof Final>;

/** What arrives on a reply inbox: token chunks in seq order, then one Final. */
export const Reply = z.discriminatedUnion("type", [TokenChunk, Final]).meta({ title: "Reply" });
export type Reply = z.infer<typeof Reply>;

/** A worker's request to stream a reply; see the bus's claimReply. */
export const ReplyClaim = z
  .object({
    v: version,
    request_id: id,
    worker_id: id,
    /**
     * The claiming worker process's own id, new at each start: a worker restarted under the same
     * worker_id has lost what it generated, so it is another claimant, not the one that streamed.
     */
    incarnation: id.optional(),
  })
  .meta({ title: "ReplyClaim" });
export type ReplyClaim = z.infer<typeof ReplyClaim>;

export const ClaimAnswer = z
  .object({ v: version, granted: z.boolean(), reason: z.string().optional() })
  .meta({ title: "ClaimAnswer" });
export type ClaimAnswer = z.infer<typeof ClaimAnswer>;

export const Cancel = z.object({ v: version, request_id: id }).meta({ title: "Cancel" });
export type Cancel = z.infer<typeof Cancel>;

export const UsageEvent = z
  .object({
    v: version,
    /** Also the JetStream message id and the billing row's key: counted once however often it is sent. */
    request_id: id,
    org: id,
    api_key_id: id,
    base: z.string().min(1),
    /** The exact adapter name, or null for the base model. */
    adapter: z.string().min(1).nullable(),
    input_tokens: count,
    /**
     * Of input_tokens, those the worker's prefix cache covered (not prefilled), billed at the base's cached
     * input price (its input price unless one is set). Absent from older workers' events: 0.
     */
    cached_input_tokens: count.optional(),
    output_tokens: count,
    /** A Batch API line or a flex-tier request, billed at the base's batch price. Absent: false. */
    batch: z.boolean().optional(),
    /** A priority-tier request, billed at the base's priority price. Absent: false. */
    priority: z.boolean().optional(),
    finish_reason: FinishReason,
    started_ms: epochMs,
    finished_ms: epochMs,
  })
  .refine((u) => u.finished_ms >= u.started_ms, {
    message: "finished_ms is before started_ms",
    path: ["finished_ms"],
  })
  .refine((u) => !(u.batch && u.priority), {
    message: "a request is batch or priority, not both",
    path: ["priority"],
  })
  .refine((u) => (u.cached_input_tokens ?? 0) <= u.input_tokens, {
    message: "cached_input_tokens exceeds input_tokens",
    path: ["cached_input_tokens"],
  })
  .meta({ title: "UsageEvent" });
export type UsageEvent = z.infer<typeof UsageEvent>;

const adapterNames = z.array(z.string().min(1));

export const WorkerHeartbeat = z
  .object({
    v: version,
    worker_id: id.refine((w) => w !== ANY_WORKER, `"${ANY_WORKER}" is reserved for the shared queue`),
    base: z.string().min(1),
    /** Luminet's version on the worker. */
    version: z.string().min(1),
    /** Adapter names resident in each tier. */
    adapters: z.object({ slot: adapterNames, ram: adapterNames, disk: adapterNames }),
    pins: adapterNames,
    free_slots: count,
    queue_depth: count,
    running: count,
    /** The worker's --max-batch: the most sequences it runs at once. Absent from workers before it existed. */
    max_batch: z.int().positive().optional(),
    /** The worker's --slots: it pins at most one fewer (a slot stays for the rest). Absent from older workers. */
    slots: z.int().positive().optional(),
    tokens_per_s: z.number().nonnegative(),
    at: epochMs,
  })
  .meta({ title: "WorkerHeartbeat" });
export type WorkerHeartbeat = z.infer<typeof WorkerHeartbeat>;

/**
 * A change to one adapter of a base. Each event also carries the adapter's whole desired state after it
 * (pinned, current blob), because only the latest event per adapter is kept: a worker that starts later
 * learns every adapter's state from those alone.
 */
export const AdapterControl = z
  .object({
    v: version,
    /** "create": a new adapter, which the worker it will land on loads ahead of its first request. */
    kind: z.enum(["create", "pin", "unpin", "delete", "update"]),
    base: z.string().min(1),
    adapter: z.string().min(1),
    pinned: z.boolean(),
    /** The adapter's current weights; null once deleted. */
    blob: AdapterBlob.nullable(),
    at: epochMs,
  })
  .refine((c) => (c.kind === "delete") === (c.blob === null), {
    message: 'blob is null exactly when kind is "delete"',
    path: ["blob"],
  })
  .refine((c) => c.kind !== "delete" || !c.pinned, {
    message: "a deleted adapter cannot be pinned",
    path: ["pinned"],
  })
  .refine((c) => c.kind !== "pin" || c.pinned, { message: 'kind "pin" needs pinned: true', path: ["pinned"] })
  .refine((c) => c.kind !== "create" || !c.pinned, {
    message: 'kind "create" needs pinned: false',
    path: ["pinned"],
  })
  .refine((c) => c.kind !== "unpin" || !c.pinned, {
    message: 'kind "unpin" needs pinned: false',
    path: ["pinned"],
  })
  .meta({ title: "AdapterControl" });
export type AdapterControl = z.infer<typeof AdapterControl>;

// ---------------------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------------------

/** A message whose `v` this build does not speak. */
export class WireVersionError extends Error {
  override readonly name = "WireVersionError";
  constructor(
    readonly messageType: string,
    readonly version: unknown,
  ) {
    super(
      `unsupported wire version ${JSON.stringify(version)} for ${messageType}; this build speaks ${WIRE_VERSION}`,
    );
  }
}

/** A message that is not valid JSON or does not match its schema; the message names each bad field. */
export class WireFormatError extends Error {
  override readonly name = "WireFormatError";
  constructor(
    readonly messageType: string,
    readonly problems: string[],
  ) {
    super(`invalid ${messageType}: ${problems.join("; ")}`);
  }
}

function titleOf(schema: z.ZodType): string {
  const title = schema.meta()?.title;
  return typeof title === "string" ? title : "message";
}

function validate<T>(schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw new WireFormatError(
    titleOf(schema),
    result.error.issues.map(
      (issue) => `${issue.path.length > 0 ? issue.path.join(".") : "(root)"}: ${issue.message}`,
    ),
  );
}

/** Validates a message and serialises it; a producer's mistake fails here, not in the consumer. */
export function encode<T>(schema: z.ZodType<T>, message: T): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(validate(schema, message)));
}

/** Parses and validates a message, checking its wire version first. */
export function decode<T>(schema: z.ZodType<T>, bytes: Uint8Array): T {
  const type = titleOf(schema);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (error) {
    throw new WireFormatError(type, [`not UTF-8 JSON (${(error as Error).message})`]);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new WireFormatError(type, ["(root): expected a JSON object"]);
  }
  const v = (value as { v?: unknown }).v;
  if (v === undefined) throw new WireFormatError(type, ["v: missing wire version"]);
  if (v !== WIRE_VERSION) throw new WireVersionError(type, v);
  return validate(schema, value);
}
