// The open-loop generator keeps its schedule whatever the server does: requests start on time while
// earlier ones are still running (a closed loop would wait for them), and failures are counted, not
// retried or dropped.
import { describe, expect, it } from "vitest";
import { openLoop } from "../../scripts/open-loop.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("openLoop", () => {
  it("starts requests on schedule while slow ones are still running", async () => {
    let running = 0;
    let mostAtOnce = 0;
    const run = await openLoop({
      rate: 100,
      seconds: 0.5,
      send: async () => {
        running++;
        mostAtOnce = Math.max(mostAtOnce, running);
        await sleep(60);
        running--;
      },
    });
    expect(run.requests).toBe(50);
    expect(run.errors).toBe(0);
    // 60 ms per request at one start every 10 ms: about six run at once; a closed loop would hold one.
    expect(mostAtOnce).toBeGreaterThanOrEqual(4);
    expect(run.latency_ms.p50).toBeGreaterThanOrEqual(55);
    expect(run.latency_ms.max).toBeGreaterThanOrEqual(run.latency_ms.p99);
    expect(run.latency_ms.p99).toBeGreaterThanOrEqual(run.latency_ms.p50);
    // 50 starts over 0.5 s and the last one's 60 ms: the rate counts to the last completion, not the last start.
    expect(run.completed_per_s).toBeGreaterThan(30);
    expect(run.completed_per_s).toBeLessThan(50 / 0.5);
  });

  it("counts failed requests and keeps the first error's message", async () => {
    let n = 0;
    const run = await openLoop({
      rate: 200,
      seconds: 0.1,
      send: async () => {
        if (n++ % 2 === 1) throw new Error(`refused ${n}`);
      },
    });
    expect(run.requests).toBe(20);
    expect(run.errors).toBe(10);
    expect(run.first_error).toBe("refused 2");
  });
});
