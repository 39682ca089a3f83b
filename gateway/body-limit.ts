// The cap on a /v1 request body. Hono's bodyLimit asks for `raw.body` to learn whether there is one, and on
// Node that makes @hono/node-server build a whole Web Request, with a ReadableStream over the socket, for
// every request — where its lightweight request would otherwise read the body straight from the socket when
// the route asks for the text. A Content-Length settles the question without that: Node's HTTP parser never
// hands over more bytes than it declares. Bodies without one (chunked) and runtimes other than Node go
// through Hono's bodyLimit, which counts the bytes as they stream.
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";

export function requestBodyLimit(maxBytes: number, onTooLarge: (c: Context) => Response): MiddlewareHandler {
  const streamed = bodyLimit({ maxSize: maxBytes, onError: onTooLarge });
  return async (c, next) => {
    const length = c.req.header("content-length");
    if (length !== undefined && c.req.header("transfer-encoding") === undefined) {
      return Number(length) > maxBytes ? onTooLarge(c) : next();
    }
    if (c.req.method === "GET" || c.req.method === "HEAD") return next();
    return streamed(c, next);
  };
}
