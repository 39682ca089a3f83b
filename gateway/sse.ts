// Server-sent events as OpenAI streams them: for chat and completions `data: <json>\n\n` per event, then
// `data: [DONE]\n\n`; for the Responses API each event also has an `event: <type>` line, and no [DONE].
// Built on a pull-based ReadableStream, so a slow client slows the reading of replies instead of buffering
// them, and a client that goes away cancels the stream, which calls `onCancel` at once (not at the next
// event). An error after the first byte can only be told in-band: an event `{"error": {...}}`, which the
// openai SDKs raise as an APIError. While the next event is slow to come (a worker starting from zero, a
// long prompt), a comment line goes out every `keepAliveMs` of silence (one idle timer per stream), so
// proxies and clients that drop idle connections keep this one; SSE clients skip comments.
import type { ErrorBody } from "../schema/api.ts";
import type { ResponseErrorEvent } from "../schema/responses-api.ts";

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

/**
 * Calls `onIdle` once `ms` pass without a touch(), and every `ms` after while nothing touches it: one timer
 * per stream, restarted in place (Node's Timeout.refresh; re-armed where timers are plain ids, as in
 * workerd), instead of a timer and a promise race per event.
 */
class IdleTimer {
  private handle: ReturnType<typeof setTimeout>;

  constructor(
    private readonly ms: number,
    private readonly onIdle: () => void,
  ) {
    this.handle = setTimeout(() => this.fire(), ms);
  }

  touch(): void {
    if (typeof this.handle === "object" && "refresh" in this.handle) this.handle.refresh();
    else {
      clearTimeout(this.handle);
      this.handle = setTimeout(() => this.fire(), this.ms);
    }
  }

  stop(): void {
    clearTimeout(this.handle);
  }

  private fire(): void {
    this.onIdle();
    this.touch();
  }
}

export function eventStream(
  source: EventSource,
  headers: Record<string, string>,
  keepAliveMs: number,
): Response {
  let done = false;
  /** A pull is waiting for the source's next event: only then does silence call for a keep-alive. */
  let waiting = false;
  let idle: IdleTimer | undefined;
  const encode = (event: unknown) => (source.named ? namedFrame(event) : frame(JSON.stringify(event)));
  const finish = () => {
    done = true;
    idle?.stop();
  };
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (done) return;
      // Armed at the first read, so a body nobody reads holds no timer.
      idle ??= new IdleTimer(keepAliveMs, () => {
        if (waiting && !done) controller.enqueue(KEEP_ALIVE);
      });
      try {
        waiting = true;
        const event = await source.next();
        waiting = false;
        if (done) return;
        idle.touch();
        if (event === null) {
          finish();
          if (!source.named) controller.enqueue(frame("[DONE]"));
          controller.close();
          return;
        }
        controller.enqueue(encode(event));
      } catch (error) {
        waiting = false;
        if (done) return;
        finish();
        const event = source.errorEvent(error);
        controller.enqueue(encode(event));
        controller.close();
      }
    },
    cancel() {
      finish();
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
