// `luminet bench gateway` at its smallest: a few requests in one process, then the open loop against a real
// gateway process on the run's NATS and Postgres at low rates. It checks that the benchmark measures what
// it says — every request answered, the sweep rising until the limit and stopping there, added latency as
// the difference it reports — not how fast anything was.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { type GatewayBenchResult, reportGatewayBench, runGatewayBench } from "../../scripts/bench-gateway.ts";

const postgresUrl = inject("postgresUrl");

describe.skipIf(!postgresUrl)("luminet bench gateway (needs DATABASE_URL)", () => {
  it("answers every request at every rate, doubles the rate while it holds and narrows where it stops, and writes its JSON", async () => {
    const result = await runGatewayBench({
      requests: 20,
      concurrency: 4,
      natsUrl: inject("natsUrl"),
      databaseUrl: postgresUrl,
      rate: 40,
      seconds: 1,
      sweepFrom: 20,
      maxRate: 80,
      // Far above anything a loaded CI machine shows: a rate is held or not by whether it kept up.
      p99LimitMs: 10_000,
    });
    expect(result.requests_per_kind).toBe(20);
    expect(result.throughput.requests_per_s).toBeGreaterThan(0);
    for (const kind of ["responses", "responses_stored"] as const) {
      expect(result.added_ms[kind].p50).toBeCloseTo(result[`${kind}_ms`].p50 - result.direct_ms.p50, 6);
    }
    expect(result.responses_stored_ms.p99).toBeGreaterThanOrEqual(result.responses_stored_ms.p50);

    const o = result.open_loop;
    for (const run of [o.direct, o.http, o.http_stream, ...o.sweep]) {
      expect(run.errors).toBe(0);
      expect(run.latency_ms.p50).toBeGreaterThan(0);
      expect(run.latency_ms.p99).toBeGreaterThanOrEqual(run.latency_ms.p50);
      expect(run.requests).toBe(run.offered_per_s);
    }
    expect([o.direct.offered_per_s, o.http.offered_per_s, o.http_stream.offered_per_s]).toEqual([40, 40, 40]);
    // Only the gateway's path costs the gateway process CPU; the direct path does not go through it.
    expect(o.http.gateway_cores).toBeGreaterThan(0);
    expect(o.added_ms.non_streaming.p50).toBeCloseTo(o.http.latency_ms.p50 - o.direct.latency_ms.p50, 3);
    // The sweep doubles from 20 while a rate holds, up to 80, then narrows between the last rate that held
    // and the first that did not; what it sustained is the highest that held. Whether a rate holds depends
    // on the machine (its last answers must come within the second, even beside other test files), so
    // this checks the walk, not where it stopped.
    const rates = o.sweep.map((run) => run.offered_per_s);
    const missed = o.sweep.findIndex((run) => !run.held);
    const doubled = missed === -1 ? rates : rates.slice(0, missed + 1);
    expect(doubled).toEqual([20, 40, 80].slice(0, doubled.length));
    let good = missed === -1 ? 80 : missed === 0 ? null : rates[missed - 1]!;
    let bad = missed === -1 ? null : rates[missed]!;
    for (const run of o.sweep.slice(doubled.length)) {
      expect(run.offered_per_s).toBe(Math.round((good! + bad!) / 2));
      if (run.held) good = run.offered_per_s;
      else bad = run.offered_per_s;
    }
    // Three narrowing steps after a rate that held; none when not even the first did.
    expect(o.sweep).toHaveLength(missed === -1 ? 3 : missed === 0 ? 1 : doubled.length + 3);
    expect(o.sustained).toEqual({ p99_limit_ms: 10_000, requests_per_s: good });

    const dir = mkdtempSync(join(tmpdir(), "luminet-bench-gateway-"));
    try {
      reportGatewayBench(result, false, dir);
      const saved = JSON.parse(readFileSync(join(dir, "gateway.json"), "utf8")) as GatewayBenchResult;
      expect(saved.open_loop.sustained).toEqual(o.sustained);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
