import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

function luminet(...args: string[]) {
  return spawnSync(process.execPath, ["bin/luminet.mjs", ...args], { encoding: "utf8" });
}

describe("the luminet command", () => {
  it("lists every role and tool in --help", () => {
    const result = luminet("--help");
    expect(result.status).toBe(0);
    for (const command of [
      "dev",
      "gateway",
      "worker",
      "meter",
      "migrate",
      "model",
      "generate",
      "adapters",
      "keys",
      "usage",
      "bench",
    ]) {
      expect(result.stdout).toMatch(new RegExp(`^  ${command}\\b`, "m"));
    }
  });

  it("refuses the gateway's autoscaling, batch and sampling flags out of range before it starts", () => {
    for (const [flags, message] of [
      [["--min-workers", "5", "--max-workers", "2"], "--min-workers (5) must not exceed --max-workers (2)"],
      [["--target-utilization", "1.5"], "--target-utilization must be a number in (0, 1]"],
      [["--max-workers", "0"], "--max-workers must be an integer ≥ 1"],
      [["--batch-fill", "0"], "--batch-fill must be a number in (0, 1]"],
      [["--sampling-defaults", "vllm"], "--sampling-defaults must be model or openai, got vllm"],
    ] as const) {
      const result = luminet("gateway", "--model", "tiny=.", ...flags);
      expect(result.status).toBe(1);
      expect(result.stdout + result.stderr).toContain(message);
    }
  });

  it("rejects an unknown command with a non-zero exit", () => {
    const result = luminet("frobnicate");
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain("unknown command");
  });
});
