// Helpers for gateway tests that call it through the official `openai` client with a scripted worker
// behind it: the error a call fails with, what the worker was sent for an answer, and the prompt the chat
// API makes of messages (to compare another route's prompt with).
import OpenAI from "openai";
import { expect } from "vitest";
import type { InferenceRequest } from "../../schema/wire.ts";
import type { FakeWorker } from "./fake-worker.ts";

/** The error a client call fails with; the test fails if the call succeeds or fails otherwise. */
export async function apiFailure(call: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  const error = await call.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(OpenAI.APIError);
  return error as InstanceType<typeof OpenAI.APIError>;
}

/** What the worker was sent for the request behind a response or chat completion id. */
export function sentFor(worker: FakeWorker, id: string): InferenceRequest {
  const requestId = id.replace(/^(resp|chatcmpl)[_-]/, "");
  const request = worker.received.find((r) => r.id === requestId);
  if (!request) throw new Error(`the worker got no request ${requestId}`);
  return request;
}

/** The prompt token ids the chat API sends for these messages (one token is generated for them). */
export async function chatPromptIds(
  client: OpenAI,
  worker: FakeWorker,
  model: string,
  messages: OpenAI.ChatCompletionMessageParam[],
): Promise<number[]> {
  const completion = await client.chat.completions.create({ model, messages, max_tokens: 1 });
  return sentFor(worker, completion.id).prompt_token_ids;
}
