// The Node gateway's HTTP server keeps idle connections open longer than the load balancers in front of it
// (gateway/node.ts KEEP_ALIVE_TIMEOUT_MS), so a balancer never sends a request on a connection the
// gateway is closing; it answers requests Node cannot parse in OpenAI's error shape; and closing, it lets
// the requests in flight finish within a grace and refuses new connections.
import { Agent, request } from "node:http";
import { connect, type Socket } from "node:net";
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayEnv } from "../../gateway/context.ts";
import { KEEP_ALIVE_TIMEOUT_MS, type ServedApp, serveApp } from "../../gateway/node.ts";

let served: ServedApp;
const agent = new Agent({ keepAlive: true, maxSockets: 1 });

beforeAll(async () => {
  const app = new Hono<GatewayEnv>().get("/ping", (c) => c.text("pong"));
  served = await serveApp(app, 0, "127.0.0.1");
});

afterAll(async () => {
  agent.destroy();
  await served.close();
});

function ping(): Promise<{ keepAlive: string; socket: Socket | null }> {
  return new Promise((resolve, reject) => {
    const req = request(`${served.url}/ping`, { agent }, (res) => {
      res.resume();
      res.on("end", () => resolve({ keepAlive: String(res.headers["keep-alive"]), socket: req.socket }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("serveApp", () => {
  it("tells clients how long it keeps an idle connection and keeps it past Node's 5 s default", async () => {
    const first = await ping();
    expect(first.keepAlive).toBe(`timeout=${KEEP_ALIVE_TIMEOUT_MS / 1000}`);
    await new Promise((resolve) => setTimeout(resolve, 5_500));
    const second = await ping();
    expect(second.socket).toBe(first.socket);
  }, 20_000);

  it("answers a request it cannot parse in OpenAI's error shape: a URL past 16 KB, a broken request line", async () => {
    const long = await fetch(`${served.url}/v1/responses/${"x".repeat(20_000)}`);
    expect(long.status).toBe(431);
    expect(await long.json()).toMatchObject({
      error: { type: "invalid_request_error", code: "request_header_fields_too_large" },
    });
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(new URL(served.url).port), "127.0.0.1", () =>
        socket.end("NOT HTTP\r\n\r\n"),
      );
      let text = "";
      socket.on("data", (chunk) => {
        text += chunk;
      });
      socket.on("end", () => resolve(text));
      socket.on("error", reject);
    });
    expect(raw).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(raw.slice(raw.indexOf("\r\n\r\n") + 4))).toMatchObject({
      error: { type: "invalid_request_error" },
    });
  });
});

describe("serveApp's close", () => {
  it("lets a request in flight finish and refuses new connections meanwhile", async () => {
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let arrived = () => {};
    const inFlight = new Promise<void>((resolve) => {
      arrived = resolve;
    });
    const app = new Hono<GatewayEnv>().get("/slow", async (c) => {
      arrived();
      await held;
      return c.text("finished");
    });
    const draining = await serveApp(app, 0, "127.0.0.1");
    const answer = fetch(`${draining.url}/slow`);
    await inFlight;
    let closed = false;
    const closing = draining.close().then(() => {
      closed = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    await expect(fetch(`${draining.url}/slow`)).rejects.toThrow();
    expect(closed).toBe(false);
    release();
    const res = await answer;
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("finished");
    await closing;
  });

  it("cuts a stream still open when the grace is over", async () => {
    const app = new Hono<GatewayEnv>().get("/stream", (c) =>
      streamSSE(c, async (stream) => {
        for (;;) {
          await stream.writeSSE({ data: "tick" });
          await stream.sleep(50);
        }
      }),
    );
    const draining = await serveApp(app, 0, "127.0.0.1");
    const res = await fetch(`${draining.url}/stream`);
    const reader = res.body!.getReader();
    await reader.read();
    await draining.close(300);
    // The connection was cut: the body ends in an error or at once, never goes on.
    const rest = (async () => {
      for (;;) if ((await reader.read()).done) return "ended";
    })();
    await expect(rest).rejects.toThrow();
  });
});
