// A drill's client: chat completions through the real gateway over HTTP, each classified by how it ended.
// A request either completes (streaming: its usage chunk, then [DONE]) or fails with OpenAI's error body
// (as the HTTP answer, or in-band as an `{"error": ...}` event once streaming began). Anything else, a
// stream cut short or no end within the time limit, throws: that is the request a drill must never lose.
import type { ErrorBody, UsageBody } from "../../schema/api.ts";

export interface ChatOutcome {
  model: string;
  stream: boolean;
  maxTokens: number;
  /** From x-request-id: the key of its usage_events row. */
  requestId: string;
  status: number;
  /** Content deltas (streaming) received before the end. */
  contentChunks: number;
  /** Set when the request completed: the usage the client was told. */
  usage?: UsageBody;
  /** Set when it failed: the error the client was told. */
  error?: ErrorBody["error"];
}

export interface ChatOptions {
  model: string;
  maxTokens: number;
  stream?: boolean;
  /** Called once, when the first content delta arrives. */
  onFirstChunk?: () => void;
  /** How long the request may take before it counts as hung; default 30 s. */
  timeoutMs?: number;
}

const DONE = "[DONE]";

function isErrorBody(value: unknown): value is ErrorBody {
  const error = (value as ErrorBody | null)?.error;
  return (
    typeof error === "object" &&
    error !== null &&
    typeof error.message === "string" &&
    typeof error.type === "string" &&
    "param" in error &&
    "code" in error
  );
}

async function readStream(response: Response, outcome: ChatOutcome, options: ChatOptions) {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      // An error event is a stream's last: the gateway closes it without [DONE].
      if (outcome.error) return;
      throw new Error(`the stream of ${outcome.requestId} (${outcome.model}) ended without [DONE]`);
    }
    buffered += value;
    const frames = buffered.split("\n\n");
    buffered = frames.pop() ?? "";
    for (const frame of frames) {
      const data = frame.replace(/^data: /, "");
      if (data === DONE) {
        if (!outcome.usage) throw new Error(`the stream of ${outcome.requestId} ended with no usage`);
        return;
      }
      const event = JSON.parse(data);
      if (isErrorBody(event)) outcome.error = event.error;
      else if (event.usage) outcome.usage = event.usage;
      else if (event.choices?.[0]?.delta?.content && outcome.contentChunks++ === 0) options.onFirstChunk?.();
    }
  }
}

/** One chat completion on `model`; resolves with how it ended, throws if it hung or vanished. */
export async function chat(gatewayUrl: string, key: string, options: ChatOptions): Promise<ChatOutcome> {
  const stream = options.stream ?? true;
  const timeoutMs = options.timeoutMs ?? 30_000;
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const response = await fetch(`${gatewayUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: options.model,
        messages: [{ role: "user", content: "Tell me a long story" }],
        max_tokens: options.maxTokens,
        temperature: 0,
        stream,
        ...(stream ? { stream_options: { include_usage: true } } : {}),
      }),
      signal,
    });
    const outcome: ChatOutcome = {
      model: options.model,
      stream,
      maxTokens: options.maxTokens,
      requestId: response.headers.get("x-request-id") ?? "",
      status: response.status,
      contentChunks: 0,
    };
    if (response.status !== 200 || !stream) {
      const body = (await response.json()) as unknown;
      if (isErrorBody(body)) outcome.error = body.error;
      else if (response.status === 200) outcome.usage = (body as { usage: UsageBody }).usage;
      else throw new Error(`${options.model}: HTTP ${response.status} without an OpenAI error body`);
      return outcome;
    }
    await readStream(response, outcome, options);
    return outcome;
  } catch (error) {
    if (signal.aborted) {
      throw new Error(`a request on ${options.model} hung: no end within ${timeoutMs} ms`);
    }
    throw error;
  }
}

/**
 * Sends streaming requests at once; `streaming` resolves when every one of them has received its first
 * token, the moment a drill strikes.
 */
export function startStreams(
  send: (options: ChatOptions) => Promise<ChatOutcome>,
  requests: readonly ChatOptions[],
): { outcomes: Promise<ChatOutcome>[]; streaming: Promise<void> } {
  let started = 0;
  let allStarted = () => {};
  const streaming = new Promise<void>((resolve) => (allStarted = resolve));
  const outcomes = requests.map((request) =>
    send({
      ...request,
      stream: true,
      onFirstChunk: () => {
        if (++started === requests.length) allStarted();
      },
    }),
  );
  return { outcomes, streaming };
}
