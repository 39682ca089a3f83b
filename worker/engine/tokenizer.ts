// A model's tokenizer (tokenizer.json + tokenizer_config.json through @huggingface/tokenizers), its chat
// template (@huggingface/jinja), and a streaming detokenizer that never emits half a UTF-8 character.
// loadTokenizer reads a model folder; tokenizerFromFiles takes the same files from memory (Workers).

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { type FimTokens, fimTokens } from "./fim-tokens.ts";
import { type ReasoningTemplate, reasoningTemplate } from "./reasoning-template.ts";
import { tokenBytesReader } from "./token-bytes.ts";
import { tokenCountFloor } from "./token-count-floor.ts";

export class TokenizerError extends Error {
  override name = "TokenizerError";
}

export interface ChatMessage {
  role: string;
  content: string;
  /** An assistant turn's function calls, arguments parsed, as Hugging Face chat templates take them. */
  tool_calls?: { id: string; type: "function"; function: { name: string; arguments: unknown } }[];
  /** A tool message: the call it answers. */
  tool_call_id?: string;
  /** An assistant turn's reasoning; templates that read it (Qwen3's) decide where it stays. */
  reasoning_content?: string;
}

export interface ChatTemplateOptions {
  addGenerationPrompt?: boolean;
  /** Functions the model may call, in OpenAI's shape (the `tools` Hugging Face templates read). */
  tools?: readonly unknown[];
  /** `enable_thinking` for templates that read it (reasoning-template.ts); absent: the template's default. */
  enableThinking?: boolean;
}

export interface Tokenizer {
  /** Number of token ids the tokenizer knows (largest id + 1, added tokens included). */
  readonly vocabSize: number;
  /** eos_token of tokenizer_config.json plus generation_config.json's eos ids, where present. */
  readonly eosTokenIds: readonly number[];
  readonly bosTokenId: number | null;
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  /** The fewest tokens `text` can encode to, read off its length without encoding it (token-count-floor.ts). */
  fewestTokens(text: string): number;
  /** Ids outside the vocabulary decode to nothing (models often pad their embedding past the vocab). */
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
  applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions): string;
  /** The chat template reads `tools`: it writes function definitions into the prompt itself. */
  readonly templateTakesTools: boolean;
  /** How the model's answers hold reasoning, as its chat template says; null for a model that does not reason. */
  readonly reasoning: ReasoningTemplate | null;
  /** A code model's fill-in-the-middle tokens (fim-tokens.ts); null where the vocabulary has none. */
  readonly fillInTheMiddle: FimTokens | null;
  isSpecial(id: number): boolean;
  /** The token's own bytes (token-bytes.ts); empty outside the vocabulary. */
  tokenBytes(id: number): Uint8Array;
}

/** A JSON object from a file's text (or an object already parsed); `name` names it in errors. */
function jsonObject(content: string | object, name: string): Record<string, unknown> {
  let parsed: unknown = content;
  if (typeof content === "string") {
    try {
      parsed = JSON.parse(content);
    } catch (err) {
      throw new TokenizerError(`${name}: ${(err as Error).message}`);
    }
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new TokenizerError(`${name}: not a JSON object`);
  }
  return parsed as Record<string, unknown>;
}

function readJson(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new TokenizerError(`${path}: ${(err as Error).message}`);
  }
  return jsonObject(text, path);
}

// tokenizer_config.json writes special tokens either as strings or as AddedToken objects.
function tokenContent(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (typeof v === "object" && v !== null && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return null;
}

function chatTemplateSource(config: Record<string, unknown>, file: string | undefined): string | null {
  const t = config.chat_template;
  if (typeof t === "string") return t;
  if (Array.isArray(t)) {
    const named = t.find(
      (x): x is { name: string; template: string } =>
        typeof x === "object" && x !== null && x.name === "default" && typeof x.template === "string",
    );
    if (named) return named.template;
  }
  // Newer transformers releases keep the template in its own file.
  return file ?? null;
}

function idsOf(v: unknown): number[] {
  const list = Array.isArray(v) ? v : [v];
  return list.filter((x): x is number => Number.isSafeInteger(x) && x >= 0);
}

/** A model folder's tokenizer files, as text (or parsed JSON): what a runtime without a file system ships. */
export interface TokenizerFiles {
  /** tokenizer.json */
  tokenizerJson: string | object;
  /** tokenizer_config.json: special tokens and, usually, the chat template. */
  tokenizerConfig?: string | object;
  /** generation_config.json: more end-of-sequence ids. */
  generationConfig?: string | object;
  /** chat_template.jinja, where the model keeps its template in a file of its own. */
  chatTemplate?: string;
  /** Where the files came from (a folder, a bundle), for error messages; default "tokenizer". */
  source?: string;
}

export function loadTokenizer(dir: string): Tokenizer {
  const tokenizerPath = join(dir, "tokenizer.json");
  if (!existsSync(tokenizerPath)) throw new TokenizerError(`${dir}: no tokenizer.json`);
  const optionalJson = (file: string) => {
    const path = join(dir, file);
    return existsSync(path) ? readJson(path) : undefined;
  };
  const templatePath = join(dir, "chat_template.jinja");
  const tokenizerConfig = optionalJson("tokenizer_config.json");
  const generationConfig = optionalJson("generation_config.json");
  return tokenizerFromFiles({
    tokenizerJson: readJson(tokenizerPath),
    ...(tokenizerConfig ? { tokenizerConfig } : {}),
    ...(generationConfig ? { generationConfig } : {}),
    ...(existsSync(templatePath) ? { chatTemplate: readFileSync(templatePath, "utf8") } : {}),
    source: dir,
  });
}

export function tokenizerFromFiles(files: TokenizerFiles): Tokenizer {
  const source = files.source ?? "tokenizer";
  const tokenizerPath = `${source}/tokenizer.json`;
  const configPath = `${source}/tokenizer_config.json`;
  const tokenizerJson = jsonObject(files.tokenizerJson, tokenizerPath);
  const config = files.tokenizerConfig === undefined ? {} : jsonObject(files.tokenizerConfig, configPath);
  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(tokenizerJson, config);
  } catch (err) {
    throw new TokenizerError(`${tokenizerPath}: ${(err as Error).message}`);
  }
  const vocabSize = Math.max(-1, ...hf.get_vocab(true).values()) + 1;
  const specialIds = new Set<number>();
  const added = hf.get_added_tokens_decoder();
  for (const [id, token] of added) if (token.special) specialIds.add(id);

  const idOf = (key: string): number | null => {
    const content = tokenContent(config[key]);
    return content === null ? null : (hf.token_to_id(content) ?? null);
  };
  const eos = new Set<number>();
  const configEos = idOf("eos_token");
  if (configEos !== null) eos.add(configEos);
  if (files.generationConfig !== undefined) {
    const generation = jsonObject(files.generationConfig, `${source}/generation_config.json`);
    for (const id of idsOf(generation.eos_token_id)) eos.add(id);
  }

  const templateSource = chatTemplateSource(config, files.chatTemplate);
  let template: Template | null = null;
  const specialStrings: Record<string, string> = {};
  for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
    const content = tokenContent(config[key]);
    if (content !== null) specialStrings[key] = content;
  }

  const decode = (ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}) => {
    const known = ids.filter((id) => Number.isSafeInteger(id) && id >= 0 && id < vocabSize);
    if (known.length === 0) return "";
    // Cleanup of tokenization spaces would make a stream's deltas disagree with the whole decode.
    return hf.decode(known, {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  };
  const tokenBytes = tokenBytesReader({
    decoder: tokenizerJson.decoder,
    tokenOf: (id) => (Number.isSafeInteger(id) && id >= 0 ? hf.id_to_token(id) : undefined),
    isAdded: (id) => added.has(id),
    decodeAlone: (id) => decode([id]),
  });

  function applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (templateSource === null)
      throw new TokenizerError(`${source}: tokenizer_config.json has no chat_template`);
    if (template === null) {
      try {
        template = new Template(templateSource);
      } catch (err) {
        throw new TokenizerError(`${configPath}: chat_template does not parse (${(err as Error).message})`);
      }
    }
    try {
      return template.render({
        ...specialStrings,
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: options.addGenerationPrompt ?? true,
        ...(options.tools ? { tools: options.tools } : {}),
        ...(options.enableThinking !== undefined ? { enable_thinking: options.enableThinking } : {}),
      });
    } catch (err) {
      throw new TokenizerError(`chat template failed: ${(err as Error).message}`);
    }
  }

  return {
    vocabSize,
    eosTokenIds: [...eos],
    bosTokenId: idOf("bos_token"),
    encode(text, options = {}) {
      return hf.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
    },
    fewestTokens: tokenCountFloor(tokenizerJson),
    decode,
    applyChatTemplate,
    templateTakesTools: templateSource !== null && /\btools\b/.test(templateSource),
    reasoning: reasoningTemplate(
      templateSource,
      () => applyChatTemplate([{ role: "user", content: "?" }]),
      (text) => {
        const ids = hf.encode(text, { add_special_tokens: false }).ids;
        return ids.length === 1 ? ids[0]! : null;
      },
    ),
    fillInTheMiddle: fimTokens((token) => hf.token_to_id(token) ?? null),
    isSpecial: (id) => specialIds.has(id),
    tokenBytes,
  };
}

/**
 * Turns generated token ids into text deltas. A delta is emitted only once the text decoded so far does
 * not end in U+FFFD, so a character whose bytes span several byte-level tokens comes out whole. Decoding
 * works on a short window of recent tokens, as text-generation-inference does, so each push is O(1).
 */
export class StreamingDetokenizer {
  private readonly tokens: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(
    private readonly tokenizer: Pick<Tokenizer, "decode">,
    private readonly options: { skipSpecialTokens: boolean } = { skipSpecialTokens: true },
  ) {}

  push(tokenId: number): string {
    this.tokens.push(tokenId);
    const prefix = this.decodeRange(this.prefixOffset, this.readOffset);
    const text = this.decodeRange(this.prefixOffset, this.tokens.length);
    if (text.length > prefix.length && !text.endsWith("\uFFFD") && text.startsWith(prefix)) {
      this.prefixOffset = this.readOffset;
      this.readOffset = this.tokens.length;
      return text.slice(prefix.length);
    }
    return "";
  }

  /** The text still held back (an incomplete character at the very end comes out as U+FFFD). */
  flush(): string {
    const prefix = this.decodeRange(this.prefixOffset, this.readOffset);
    const text = this.decodeRange(this.prefixOffset, this.tokens.length);
    this.prefixOffset = this.readOffset = this.tokens.length;
    return text.startsWith(prefix) ? text.slice(prefix.length) : "";
  }

  private decodeRange(start: number, end: number): string {
    return this.tokenizer.decode(this.tokens.slice(start, end), this.options);
  }
}
