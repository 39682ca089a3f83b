// POST /tokenize and /detokenize, as vLLM serves them: a prompt's token ids under a model's tokenizer (an
// adapter's is its base's), so a client counts what a request will be billed for and checks it fits the
// context before sending it. A chat request's messages count as a chat completion would prefill them (the
// template, tools and reasoning settings applied: admission.ts's chatPrompt). Nothing runs on a worker and
// nothing is billed.
import type { Handler } from "hono";
import {
  DetokenizeRequest,
  type DetokenizeResponse,
  TokenizeRequest,
  type TokenizeResponse,
} from "../../schema/api.ts";
import { tokenText } from "../../worker/engine/token-bytes.ts";
import { chatPrompt, refuseSurelyTooLong } from "../admission.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { invalidRequest } from "../errors.ts";
import { resolveModel } from "../models.ts";
import { readBody } from "../request-body.ts";

export function tokenize(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const body = await readBody(c, TokenizeRequest);
    const { base } = await resolveModel(deps, c.get("principal"), body.model);
    const { messages, prompt } = body;
    if ((messages === undefined) === (prompt === undefined)) {
      throw invalidRequest("give either prompt (a text) or messages (a chat)", "prompt");
    }
    if (prompt !== undefined) refuseSurelyTooLong(prompt, base, "prompt");
    const tokens = messages
      ? deps.compileTime.admit(c.get("principal").orgId, () => chatPrompt({ ...body, messages }, base)).ids
      : base.tokenizer.encode(prompt!, { addSpecialTokens: body.add_special_tokens ?? true });
    const answer: TokenizeResponse = {
      count: tokens.length,
      max_model_len: base.contextLength,
      tokens,
      token_strs:
        body.return_token_strs === true ? tokens.map((id) => tokenText(base.tokenizer.tokenBytes(id))) : null,
    };
    return c.json(answer);
  };
}

export function detokenize(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const body = await readBody(c, DetokenizeRequest);
    const { base } = await resolveModel(deps, c.get("principal"), body.model);
    const vocab = base.tokenizer.vocabSize;
    const outside = body.tokens.find((id) => id >= vocab);
    if (outside !== undefined) {
      throw invalidRequest(`token id ${outside} is outside the vocabulary of ${vocab} tokens`, "tokens");
    }
    const answer: DetokenizeResponse = { prompt: base.tokenizer.decode(body.tokens) };
    return c.json(answer);
  };
}
