// The Node gateway's HTTP server keeps idle connections open longer than the load balancers in front of it
// (gateway/node.ts KEEP_ALIVE_TIMEOUT_MS), so a balancer never sends a request on a connection the
// gateway is closing.
import { Agent, request } from "node:http";
import type { Socket } from "node:net";
import { Hono } from "hono";
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
});
