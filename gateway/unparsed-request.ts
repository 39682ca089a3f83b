// The answer to a request Node cannot parse (its URL and headers past Node's 16 KB, a malformed request
// line): OpenAI's error shape, as every other refusal, instead of Node's bare status line with no body.
import type { Duplex } from "node:stream";

export function answerUnparsedRequest(error: Error & { code?: string }, socket: Duplex): void {
  // A connection the client already dropped gets nothing.
  if (error.code === "ECONNRESET" || !socket.writable) {
    socket.destroy();
    return;
  }
  const tooLarge = error.code === "HPE_HEADER_OVERFLOW";
  const body = JSON.stringify({
    error: {
      message: tooLarge
        ? "The request's URL and headers are too large (more than 16 KB)."
        : "The request could not be read as HTTP.",
      type: "invalid_request_error",
      param: null,
      code: tooLarge ? "request_header_fields_too_large" : null,
    },
  });
  const status = tooLarge ? "431 Request Header Fields Too Large" : "400 Bad Request";
  socket.end(
    `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `connection: close\r\n\r\n${body}`,
  );
}
