import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, inject, it } from "vitest";

function luminet(...args: string[]) {
  return luminetWith({}, ...args);
}

function luminetWith(env: Record<string, string>, ...args: string[]) {
  return spawnSync(process.execPath, ["bin/luminet.mjs", ...args], {
    encoding: "utf8",
    env: { ...process.env, ...env },
  });
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

  it("lets a worker's --max-adapters-per-batch default to its --slots, and refuses one above them", () => {
    const worker = (...flags: string[]) =>
      luminetWith(
        { NATS_URL: inject("natsUrl"), LOG_LEVEL: "error" },
        ...["worker", "--model", "no-such-model", "--base", "tiny", "--namespace", `cli_${process.pid}`],
        ...flags,
      );
    // Past the flags: it stops at the model it cannot find.
    const defaulted = worker("--slots", "4");
    expect(defaulted.status).toBe(1);
    expect(defaulted.stdout).toContain("no-such-model: no tokenizer.json");
    const above = worker("--slots", "4", "--max-adapters-per-batch", "8");
    expect(above.status).toBe(1);
    expect(above.stdout).toContain("--max-adapters-per-batch 8 exceeds --slots 4");
  });

  it("refuses a LUMINET_DEV_API_KEY that is no key in one line, before dev generates anything", () => {
    const data = mkdtempSync(join(tmpdir(), "luminet-dev-key-"));
    try {
      for (const key of ["lk_my_dev_key_0123456789abcdef", "lk_tooShort123"]) {
        const result = luminetWith({ LUMINET_DEV_API_KEY: key }, "dev", "--data", join(data, "home"));
        expect(result.status).toBe(1);
        expect(result.stderr).toBe(
          'luminet dev: LUMINET_DEV_API_KEY must be "lk_" followed by at least 20 letters or digits\n',
        );
        expect(existsSync(join(data, "home"))).toBe(false);
      }
      expect(readdirSync(data)).toEqual([]);
    } finally {
      rmSync(data, { recursive: true, force: true });
    }
  });

  it("rejects an unknown command with a non-zero exit", () => {
    const result = luminet("frobnicate");
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain("unknown command");
  });
});
