// The `luminet` command: the binary itself for help, an unknown command and a worker's flags; a command's
// refusals before it starts run in this process with the same commander registration (a process each
// costs seconds of TypeScript loading), the gateway's logged as the binary logs them.
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { symbols } from "pino";
import { describe, expect, inject, it, vi } from "vitest";
import { registerDev } from "../../cli/commands/dev.ts";
import { registerGateway } from "../../cli/commands/gateway.ts";
import { logger } from "../../core/logger.ts";
import { type EnvChanges, luminetInProcess, spawnLuminet } from "../support/luminet-command.ts";

const luminet = (...args: string[]) => spawnLuminet(args);
const luminetWith = (env: EnvChanges, ...args: string[]) => spawnLuminet(args, env);

describe("the luminet command", () => {
  it("lists every role and tool in --help", async () => {
    const result = await luminet("--help");
    expect(result.code).toBe(0);
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

  it("refuses the gateway's autoscaling, batch and sampling flags out of range before it starts", async () => {
    // A service command logs its failure (pino, straight to its destination, not through process.stdout):
    // the lines it writes are taken from that destination.
    const destination = (logger as unknown as Record<symbol, { write(line: string): boolean }>)[
      symbols.streamSym
    ]!;
    let logged = "";
    const write = vi.spyOn(destination, "write").mockImplementation((line: string) => {
      logged += line;
      return true;
    });
    try {
      for (const [flags, message] of [
        [["--min-workers", "5", "--max-workers", "2"], "--min-workers (5) must not exceed --max-workers (2)"],
        [["--target-utilization", "1.5"], "--target-utilization must be a number in (0, 1]"],
        [["--max-workers", "0"], "--max-workers must be an integer ≥ 1"],
        [["--worker-tokens-per-s", "0"], "--worker-tokens-per-s must be an integer ≥ 1"],
        [["--model", "tiny"], "--model expects NAME=DIR (e.g. meta-llama/Llama-3.2-1B=./models/llama), got"],
        [["--batch-fill", "0"], "--batch-fill must be a number in (0, 1]"],
        [["--sampling-defaults", "vllm"], "--sampling-defaults must be model or openai, got vllm"],
      ] as const) {
        logged = "";
        const result = await luminetInProcess(registerGateway, ["gateway", "--model", "tiny=.", ...flags]);
        expect(result.code).toBe(1);
        expect(result.stdout + result.stderr + logged).toContain(message);
        // A flag to fix, not a crash: the message alone, no stack.
        expect(logged).not.toContain('"stack"');
      }
    } finally {
      write.mockRestore();
    }
  });

  it("lets a worker's --max-adapters-per-batch default to its --slots, and refuses one above them", async () => {
    const worker = (...flags: string[]) =>
      luminetWith(
        { NATS_URL: inject("natsUrl"), LOG_LEVEL: "error" },
        ...["worker", "--model", "no-such-model", "--base", "tiny", "--namespace", `cli_${process.pid}`],
        ...flags,
      );
    // Past the flags: it stops at the model it cannot find. The two processes run side by side.
    const [defaulted, above] = await Promise.all([
      worker("--slots", "4"),
      worker("--slots", "4", "--max-adapters-per-batch", "8"),
    ]);
    expect(defaulted.code).toBe(1);
    expect(defaulted.stdout).toContain("no-such-model: no tokenizer.json");
    expect(above.code).toBe(1);
    expect(above.stdout).toContain("--max-adapters-per-batch 8 exceeds --slots 4");
  });

  it("refuses a LUMINET_DEV_API_KEY that is no key in one line, before dev generates anything", async () => {
    const data = mkdtempSync(join(tmpdir(), "luminet-dev-key-"));
    try {
      for (const key of ["lk_my_dev_key_0123456789abcdef", "lk_tooShort123"]) {
        const result = await luminetInProcess(registerDev, ["dev", "--data", join(data, "home")], {
          LUMINET_DEV_API_KEY: key,
        });
        expect(result.code).toBe(1);
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

  it("rejects an unknown command with a non-zero exit", async () => {
    const result = await luminet("frobnicate");
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("unknown command");
  });
});
