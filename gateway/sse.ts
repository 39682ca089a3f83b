// Server-sent events as OpenAI streams them: for chat and completions `data: <json>\n\n` per event, then
// `data: [DONE]\n\n`; for the Responses API each event also has an `event: <type>` line, and no [DONE].
// Built on a pull-based ReadableStream, so a slow client slows the reading of replies instead of buffering
// them, and a client that goes away cancels the stream, which calls `onCancel` at once (not at the next
// event). An error after the first byte can only be told in-band: an event `{"error": {...}}`, which the
// openai SDKs raise as an APIError. While the next event is slow to come (a worker starting from zero, a
// long prompt), a comment line goes out every `keepAliveMs`, so proxies and clients that drop idle
// connections keep this one; SSE clients skip comments.
import type { ErrorBody } from "../schema/api.ts";
import type { ResponseErrorEvent } from "../schema/responses-api.ts";
import { TIMED_OUT, within } from "./within.ts";

export interface EventSource {
  /** The next event's JSON payload, or null when the stream is complete. */
  next(): Promise<unknown | null>;
  /** The error event to send when next() throws: an ErrorBody, or a Responses API error event. */
  errorEvent(error: unknown): ErrorBody | ResponseErrorEvent;
  /** The client went away: stop producing. */
  onCancel(): void;
  /** The Responses API's framing: each event's `type` as its `event:` line, and no [DONE] at the end. */
  named?: boolean;
}

const encoder = new TextEncoder();
const frame = (data: string) => encoder.encode(`data: ${data}\n\n`);
const namedFrame = (event: unknown) =>
  encoder.encode(`event: ${(event as { type: string }).type}\ndata: ${JSON.stringify(event)}\n\n`);
const KEEP_ALIVE = encoder.encode(": keep-alive\n\n");

export function eventStream(
  source: EventSource,
  headers: Record<string, string>,
  keepAliveMs: number,
): Response {
  let done = false;
  /** The event being waited for, kept across pulls that only sent a keep-alive. */
  let pending: Promise<unknown> | null = null;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (done) return;
      try {
        pending ??= source.next();
        const event = await within(pending, keepAliveMs);
        if (done) return;
        if (event === TIMED_OUT) {
          controller.enqueue(KEEP_ALIVE);
          return;
        }
        pending = null;
        if (event === null) {
          done = true;
          if (!source.named) controller.enqueue(frame("[DONE]"));
          controller.close();
          return;
        }
        controller.enqueue(source.named ? namedFrame(event) : frame(JSON.stringify(event)));
      } catch (error) {
        if (done) return;
        done = true;
        const event = source.errorEvent(error);
        controller.enqueue(source.named ? namedFrame(event) : frame(JSON.stringify(event)));
        controller.close();
      }
    },
    cancel() {
      done = true;
      source.onCancel();
    },
  });
  return new Response(body, {
    status: 200,
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      ...headers,
    },
  });
}
