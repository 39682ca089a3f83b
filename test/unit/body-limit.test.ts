// The /v1 body cap over real HTTP (@hono/node-server): a declared Content-Length over the cap is refused
// before anything is read, a chunked body is counted as it streams and refused once it passes the cap, and
// bodies within it reach the route whole either way.
import { request } from "node:http";
import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requestBodyLimit } from "../../gateway/body-limit.ts";
import type { GatewayEnv } from "../../gateway/context.ts";
import { type ServedApp, serveApp } from "../../gateway/node.ts";

const LIMIT = 1024;
let served: ServedApp;

beforeAll(async () => {
  const app = new Hono<GatewayEnv>();
  app.use(
    "/v1/*",
    requestBodyLimit(LIMIT, (c) => c.json({ error: "too large" }, 413)),
  );
  app.post("/v1/echo", async (c) => c.json({ bytes: (await c.req.text()).length }));
  app.get("/v1/echo", (c) => c.json({ bytes: 0 }));
  served = await serveApp(app, 0, "127.0.0.1");
});
afterAll(() => served.close());

/** POSTs `body` in `parts` writes; with `chunked` no Content-Length is sent. */
function post(body: string, chunked: boolean): Promise<{ status: number; json: unknown }> {
  const url = new URL(`${served.url}/v1/echo`);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "POST",
        headers: chunked ? { "transfer-encoding": "chunked" } : { "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (chunk: string) => (text += chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) }));
      },
    );
    req.on("error", reject);
    // Two writes: a chunked body arrives in pieces the limit has to add up.
    req.write(body.slice(0, body.length >> 1));
    req.end(body.slice(body.length >> 1));
  });
}

describe("requestBodyLimit", () => {
  it("passes bodies within the cap to the route, declared or chunked", async () => {
    for (const chunked of [false, true]) {
      expect(await post("x".repeat(LIMIT), chunked)).toEqual({ status: 200, json: { bytes: LIMIT } });
    }
  });

  it("refuses a body over the cap, declared or chunked", async () => {
    for (const chunked of [false, true]) {
      expect(await post("x".repeat(LIMIT + 1), chunked)).toMatchObject({ status: 413 });
    }
  });

  it("lets a GET without a body through", async () => {
    const res = await fetch(`${served.url}/v1/echo`);
    expect(await res.json()).toEqual({ bytes: 0 });
  });
});
